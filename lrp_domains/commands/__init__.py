"""The command groups of ``lrp-domains`` (typer): ``text``, ``bio``, ``run``, ``bench``. They parse options,
call the library, and turn its errors into one-line ``error: ...`` messages; no library code
lives here."""
