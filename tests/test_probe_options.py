"""Typed probe options (audit.probes.options), the registry, the shared --limit sampler, README's generated
option tables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from audit.errors import ConfigError
from audit.probes import PROBES, ProbeContext, options_class, probe_spec, registry
from audit.probes.option_sources import resolve_probe_options
from audit.probes.options import DEFAULT_K, GenerationOptions, ItemOptions, ProbeOptions, parse_options
from audit.probes.sampling import stratified_sample

SHARED = {"seed", "n_bootstrap"}
GENERATION = {"k", "max_new_tokens", "temperature", "top_p"}


def test_every_probe_declares_a_frozen_options_class_with_the_shared_fields():
    specs = registry()
    assert set(specs) == set(PROBES)
    for name, spec in specs.items():
        cls = spec.options
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen and issubclass(cls, ProbeOptions)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert SHARED <= set(fields), name
        assert all(f.metadata.get("help") for f in fields.values()), name  # one line of help per field
        assert spec.run == PROBES[name] and spec.metrics == tuple(spec.metrics)
        instance = cls(**({"sensitive": ("sex",)} if name == "decisions" else {}))  # the defaults are valid
        with pytest.raises(dataclasses.FrozenInstanceError):
            instance.seed = 1
    generating = {n for n, s in specs.items() if issubclass(s.options, GenerationOptions)}
    assert generating == {"toxicity", "counterfactual", "honest"}
    assert all(options_class(n)().k == DEFAULT_K for n in generating)  # one default for k
    assert {n for n, s in specs.items() if not issubclass(s.options, ItemOptions)} == {"rl"}  # no items to limit
    assert probe_spec("bbq").options.__name__ == "BBQOptions"


def test_strings_are_read_by_field_type_and_checked():
    cls = options_class("toxicity")
    o = parse_options(cls, {"k": "3", "temperature": "0", "compare_base": "no", "limit": "none", "source": "RTP"},
                      probe="toxicity", seed=7)
    assert (o.k, o.temperature, o.compare_base, o.limit, o.source, o.seed) == (3, 0.0, False, None, "rtp", 7)
    settings, warnings = o.generation_settings(batch_size=4)
    assert settings.do_sample is False and settings.num_samples == 1 and "reduced to 1" in warnings[0]
    assert parse_options(cls, {"seed": 2}, probe="toxicity", seed=7).seed == 2  # an explicit seed wins
    d = parse_options(options_class("decisions"), {"sensitive": "sex, race", "positive": ["yes", "sure"]},
                      probe="decisions")
    assert d.sensitive == ("sex", "race") and d.positive == ("yes", "sure")
    for raw, message in [({"k": True}, "option 'toxicity.k': expected integer, got True"),
                         ({"top_p": 0}, "option 'toxicity.top_p': 0.0; expected a number in \\(0, 1\\]"),
                         ({"temperature": float("nan")}, "option 'toxicity.temperature': nan"),
                         ({"n_bootstrap": 5}, "option 'toxicity.n_bootstrap': 5"),
                         ({"source": "reddit"}, "expected one of builtin, bold, rtp"),
                         ({"scorer": 3}, "option 'toxicity.scorer': 3")]:
        with pytest.raises(ConfigError, match=message):
            parse_options(cls, raw, probe="toxicity")
    assert parse_options(cls, {"n_bootstrap": 0}, probe="toxicity").n_bootstrap == 0  # point estimates only


def test_old_names_warn_and_map_to_the_shared_ones():
    said = []
    o = parse_options(options_class("shift"), {"bootstrap": "50"}, probe="shift", say=said.append)
    assert o.n_bootstrap == 50 and "'shift.bootstrap' is deprecated; use 'shift.n_bootstrap'" in said[0]
    assert parse_options(options_class("honest"), {"resamples": 20}, probe="honest").n_bootstrap == 20
    assert parse_options(options_class("bbq"), {"normalise": "true"}, probe="bbq").normalisation == "token"
    with pytest.raises(ConfigError, match="old name of 'n_bootstrap'; give only 'n_bootstrap'"):
        parse_options(options_class("toxicity"), {"resamples": 20, "n_bootstrap": 30}, probe="toxicity")


def test_sources_merge_with_precedence_and_unknown_names_are_suggested():
    resolved = [("toxicity", "toxicity", {}), ("rl:lending", "rl", {"env": "lending"}), ("bbq", "bbq", {})]
    out = resolve_probe_options(resolved, {"n_bootstrap": 100, "k": 2, "toxicity": {"k": 3}, "bbq.limit": 4,
                                           "rl:lending.horizon": 5, "crows_pairs.limit": 9}, seed=1, limit=8)
    assert out["toxicity"].k == 3 and out["toxicity"].limit == 8 and out["toxicity"].n_bootstrap == 100
    assert out["bbq"].limit == 4 and out["rl:lending"].horizon == 5 and out["rl:lending"].seed == 1
    with pytest.raises(ConfigError, match="unknown option 'lens_limt' for probes toxicity, bbq; valid: "):
        resolve_probe_options([("toxicity", "toxicity", {}), ("bbq", "bbq", {})], {"lens_limt": 3}, seed=0)
    with pytest.raises(ConfigError, match="unknown probe 'bqq' in option 'bqq.limit'; did you mean 'bbq'"):
        resolve_probe_options(resolved, {"bqq.limit": 3}, seed=0)
    with pytest.raises(ConfigError, match="rl environment 'nowhere': unknown environment id"):
        resolve_probe_options([("rl:nowhere", "rl", {"env": "nowhere"})], {}, seed=0)


def test_probe_context_reads_loose_options_each_time():
    ctx = ProbeContext(model=None, out_dir=Path("."), options={"k": "2", "limit": 3}, seed=5)
    cls = options_class("toxicity")
    assert ctx.options_as(cls).k == 2 and ctx.options_as(cls).seed == 5
    ctx.options["k"] = 4
    assert ctx.options_as(cls).k == 4
    picked = ctx.sample(list(range(20)), strata=lambda i: (i % 2,))
    assert len(picked) == 3 and ctx.sample_record.n_items == 3 and ctx.sample_record.seed == 5


def test_stratified_sample_covers_strata_in_proportion_and_is_seeded():
    items = [(kind, group, i) for kind, n in (("neutral", 6), ("provocative", 4)) for group in "abcdefghij"
             for i in range(n)]  # 100 items; the first 60 are all neutral
    by = lambda it: it[:2]  # noqa: E731
    picked, record = stratified_sample(items, 10, 0, by, levels=("kind", "group"))
    assert [it[0] for it in picked].count("neutral") == 6 and len({it[1] for it in picked}) == 10
    assert picked == sorted(picked, key=items.index)  # file order kept
    assert stratified_sample(items, 10, 0, by)[0] == picked and stratified_sample(items, 10, 1, by)[0] != picked
    assert record.n_available == 100 and record.n_items == 10 and record.n_strata == 20 and record.limit == 10
    many, _ = stratified_sample(items, 50, 3, by)
    assert [it[0] for it in many].count("neutral") == 30 and len(set(many)) == 50
    assert all(sum(1 for it in many if it[:2] == key) >= 1 for key in {by(it) for it in items})
    assert stratified_sample(items, 500, 0, by)[0] == items and stratified_sample(items, None, 0, by)[0] == items
    one, _ = stratified_sample(items, 1, 0, by)
    assert len(one) == 1


def test_readme_option_tables_are_generated_from_the_declarations():
    from audit.probes import docs

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert docs.readme_section(readme) == docs.render_markdown(), \
        "README's probe options are out of date: run python -m audit.probes.docs --write README.md"
    for name in PROBES:
        assert f"#### `{name}`" in docs.render_markdown()
    assert "| `temperature` | number | `1.0` | sampling temperature; 0 means greedy" in docs.render_markdown()


def test_max_new_tokens_must_leave_room_for_the_prompt(tiny_llama_dir, tmp_path):
    """max_new_tokens near the model's window used to cut every prompt to its last token."""
    from audit.lm.generation import GenerationSettings, generate
    from audit.lm.models import load

    handle = load(tiny_llama_dir)  # a 256-token window
    with pytest.raises(ConfigError, match="max_new_tokens=250: the model's context is 256 tokens, which leaves 6 "
                                          "for the prompt; use at most 240"):
        generate(handle, ["The weather"], GenerationSettings(max_new_tokens=250, do_sample=False), tmp_path)
