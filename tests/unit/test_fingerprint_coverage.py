"""Every config key that can change a result is fingerprinted: the test walks the config tree of every preset,
with every method the preset allows, greedy and sampling, and checks that each key is read into the fingerprint
of a stage that some preset plans, or is listed, with its reason, in :data:`sipo.fingerprints.RESULT_NEUTRAL`
(keys of a stage that a config does not plan, such as ``sft.*`` without an sft stage, are read by nothing)."""

from __future__ import annotations

from pathlib import Path

from sipo.config import to_dict
from sipo.configure import load_config
from sipo.errors import ConfigError
from sipo.fingerprints import RESULT_NEUTRAL
from sipo.methods import METHODS
from sipo.pipeline import fingerprint, plan

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
SAMPLING = [f"{section}.decode.temperature=0.9" for section in ("sample", "review", "rewrite", "eval")]


def leaves(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in tree.items():
        key = f"{prefix}{name}"
        keys += leaves(value, key + ".") if isinstance(value, dict) and value else [key]
    return keys


def covered(key: str, stages) -> bool:
    def under(leaf: str, section: str) -> bool:
        return leaf == section or leaf.startswith(section + ".")

    return any(under(key, k) and not any(under(key, x) for x in stage.exclude)
               for stage in stages for k in stage.config_keys)


def widest(preset: str, *overrides: str):
    """The preset with every method it accepts (sipo_oracle_filter needs the synthetic data's oracle)."""
    names = list(METHODS)
    try:
        return load_config(ROOT / "configs" / preset, ["model.device=cpu", f"methods=[{','.join(names)}]",
                                                       *overrides])
    except ConfigError:
        names.remove("sipo_oracle_filter")
        return load_config(ROOT / "configs" / preset, ["model.device=cpu", f"methods=[{','.join(names)}]",
                                                       *overrides])


def test_every_config_key_is_fingerprinted_or_listed_as_result_neutral():
    keys, stages = set(), []
    for preset in PRESETS:
        for overrides in ([], SAMPLING):
            cfg = widest(preset, *overrides)
            keys |= set(leaves(to_dict(cfg)))
            stages += plan(cfg)
    assert len(keys) > 100
    unlisted = sorted(k for k in keys if not covered(k, stages) and k not in RESULT_NEUTRAL)
    assert unlisted == [], "fingerprint these keys or list them with a reason in RESULT_NEUTRAL"
    assert covered("shard_size", stages)  # where a decode samples


def test_result_neutral_keys_are_config_keys_with_a_reason():
    keys = set(leaves(to_dict(widest("demo.yaml"))))
    for key, reason in RESULT_NEUTRAL.items():
        assert key in keys and len(reason) > 20, key


def test_shard_size_is_fingerprinted_where_a_decode_samples(tmp_path):
    """Each shard's decode is seeded anew, so with sampling the shard size changes the responses: it enters the
    fingerprint of the stages that sample, and only of those (a re-sharded greedy run stays finished)."""
    def fingerprints(*overrides: str) -> dict[str, str]:
        cfg = widest("smoke.yaml", f"run_dir={tmp_path}", *overrides)
        return {s.id: fingerprint(cfg, s, {u: "r" for u in s.upstream}) for s in plan(cfg)}

    greedy = fingerprints("shard_size=16")
    assert fingerprints("shard_size=1") == greedy
    base = fingerprints("review.decode.temperature=0.9", "shard_size=16")
    other = fingerprints("review.decode.temperature=0.9", "shard_size=1")
    assert [s for s in base if base[s] != other[s]] == ["r1/review"]
    sampled = fingerprints(*SAMPLING, "shard_size=16")
    changed = fingerprints(*SAMPLING, "shard_size=1")
    assert sorted(s for s in sampled if sampled[s] != changed[s]) == ["evaluate", "r1/review", "r1/rewrite",
                                                                     "r1/sample"]
