"""One module per family of published models; each provides, for its registry entries
(:class:`vprlab.pretrained.registry.PublishedModel`), ``build_<x>(entry) -> VPRModel`` (random
weights), ``convert_<x>(raw, entry) -> state dict`` (the release's keys mapped to ours, explicitly)
and, optionally, ``configs_<x>(entry)`` (zoo configs for fine-tuning) or a reader for other containers."""
