"""The scoped engine: a composite applied to a model inside a context (scope, coverage, tracked
inputs), explain() and its batching loop, targets, results, the direct MLP path."""
