"""The one key-mapping helper and the one strict check every published family uses."""

from __future__ import annotations

import pytest
import torch

from vprlab.pretrained.keymaps import check_state, load_strict, map_keys, prefix_rules


def test_map_keys_renames_whole_keys_by_the_first_rule_and_keeps_the_order() -> None:
    raw = {"b.1.w": torch.zeros(1), "a.p": torch.ones(1), "b.2.w": torch.zeros(2)}
    rules = ((r"b\.(\d)\.w", r"net.\1.weight"), (r"a\.p", "agg.p"), (r"b\.2\.w", "never"))
    out = map_keys(raw, rules, "toy")
    assert list(out) == ["net.1.weight", "agg.p", "net.2.weight"]
    assert out["agg.p"] is raw["a.p"]
    # A rule matches the whole key, not a prefix: "a.pp" is not "a.p" and is named.
    with pytest.raises(ValueError, match=r"toy: 1 keys that no mapping knows: a\.pp"):
        map_keys({"a.pp": torch.zeros(1)}, rules, "toy")


def test_map_keys_drops_only_what_it_is_told_to() -> None:
    raw = {"m.mask_token": torch.zeros(1), "m.x": torch.ones(1)}
    rules = ((r"m\.(.+)", r"dino.\1"),)
    assert list(map_keys(raw, rules, "toy", drop=(r"m\.mask_token",))) == ["dino.x"]
    assert list(map_keys(raw, rules, "toy")) == ["dino.mask_token", "dino.x"]  # not dropped unless asked
    with pytest.raises(ValueError, match=r"1 keys that no mapping knows: extra"):
        map_keys({**raw, "extra": torch.zeros(1)}, rules, "toy", drop=(r"m\.mask_token",))


def test_check_state_orders_like_the_model_and_names_every_difference() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = dict(reversed(list(model.state_dict().items())))
    assert list(check_state(model.state_dict(), state, "file", "the model")) == list(model.state_dict())
    bad = {**state, "0.weight": torch.zeros(4, 2), "extra": torch.zeros(1)}
    del bad["1.bias"]
    with pytest.raises(ValueError, match=r"^file does not match the model: 1 missing keys: 1\.bias; 1 unexpected keys: extra; "
                                         r"1 shape mismatches: 0\.weight \(4, 2\) \(expected \(3, 2\)\) \(note\)$"):
        load_strict(model, bad, "file", "the model", lambda: " (note)")
    before = model[0].weight.detach().clone()
    load_strict(model, {k: torch.ones_like(v) for k, v in state.items()}, "file", "the model")
    assert torch.equal(model[0].weight, torch.ones(3, 2)) and not torch.equal(before, model[0].weight)


def test_prefix_rules_rename_both_ways_in_order() -> None:
    pairs = (("a.norm_q", "b.norm"), ("a", "b"), ("x.y", "z"))
    state = {"a.norm_q.weight": torch.zeros(1), "a.queries": torch.ones(1), "x.y.0.bias": torch.zeros(2)}
    ours = map_keys(state, prefix_rules(pairs), "test")
    assert list(ours) == ["b.norm.weight", "b.queries", "z.0.bias"]
    assert list(map_keys(ours, prefix_rules(pairs, inverse=True), "test")) == list(state)
    with pytest.raises(ValueError, match=r"keys that no mapping knows: ab\.c"):  # a prefix ends at a dot
        map_keys({"ab.c": torch.zeros(1)}, prefix_rules(pairs), "test")
