"""What the engine costs: LRP over gradient x input on small models (``bench core``), and the sequence adapter's
overhead on top of the engine (``bench adapter``)."""
