"""One module per method whose released files vprlab loads: each describes its files as
:class:`~vprlab.pretrained.registry.PublishedModel` entries and registers them when imported
(:mod:`vprlab.pretrained.catalog` imports them all), and provides the functions its entries name:
``build_<x>(entry) -> VPRModel`` (random weights), ``convert_<x>(raw, entry) -> state dict`` (the
release's keys mapped to ours with :func:`vprlab.pretrained.keymaps.map_keys`), optionally
``configs_<x>(entry)`` (zoo configs for fine-tuning), ``export_<x>(state, entry)`` (the inverse
mapping) or a reader for another container. Backbone configs and key rules shared by several
families live in :mod:`._common`."""

FAMILIES = ("boq", "cosplace", "eigenplaces", "mixvpr", "convap", "salad", "megaloc", "netvlad", "cliquemining", "indoor_vpr",
            "dinomix", "apgem", "sfrs", "cricavpr", "supervlad", "anyloc", "qaa", "edtformer")
