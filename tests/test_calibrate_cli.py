"""ecad-calibrate end to end on a tiny random pipeline: a valid bank, a resumable run folder."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import numpy as np
import pytest

from ecad.bank import ScheduleBank, fingerprint
from ecad.cli.calibrate import build_parser, main
from ecad.tiny import build_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_pipeline("pixart-alpha", tmp_path_factory.getbasetemp() / "ecad-tiny" / "pixart-alpha")


def common(model, tmp_path, *extra):
    return [
        "--model", str(model), "--steps", "4", "--num-prompts", "2", "--seeds", "0",
        "--population", "8", "--scorer", "fidelity", "--run-dir", str(tmp_path / "run"),
        "--out", str(tmp_path / "bank.json"), "--no-progress", *extra,
    ]


def memo_records(run):
    return [json.loads(line) for line in (run / "memo.jsonl").read_text().splitlines()]


def test_help_explains_the_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("Pareto", "--generations", "--ray", "--cost", "resume", "--scorer"):
        assert word in text


def test_the_search_seed_is_named_apart_from_the_image_seeds_and_seed_still_works():
    parser = build_parser()
    assert parser.parse_args([]).search_seed == 0
    assert parser.parse_args(["--seed", "3"]).search_seed == 3, "the old spelling, hidden"
    args = parser.parse_args(["--search-seed", "4", "--seeds", "5,6"])
    assert (args.search_seed, args.image_seeds) == (4, "5,6")
    text = parser.format_help()
    assert "--search-seed" in text and not re.search(r"--seed\b(?!-)", text)


def test_each_genome_decodes_each_gene_vector_once(tiny_model, tmp_path, monkeypatch):
    from ecad.search.genome import GeneSpace

    decoded = Counter()
    from_genes = GeneSpace.from_genes

    def counting(self, genes):
        decoded[id(self), np.asarray(genes).tobytes()] += 1
        return from_genes(self, genes)

    monkeypatch.setattr(GeneSpace, "from_genes", counting)
    assert main(common(tiny_model, tmp_path, "--generations", "2", "--no-plot", "--scorer-arg", "max_psnr=150")) == 0
    assert decoded and max(decoded.values()) == 1
    # in process, two genomes: the driver's (memo keys, bank) and the evaluator's (render and cost)
    per_genome = sorted(Counter(genome for genome, _ in decoded).values())
    assert len(per_genome) == 2 and per_genome[0] == len(memo_records(tmp_path / "run"))


def test_calibration_writes_a_valid_bank_and_extends_without_reevaluating(tiny_model, tmp_path):
    assert main(common(tiny_model, tmp_path, "--generations", "1", "--scorer-arg", "max_psnr=150")) == 0
    bank = ScheduleBank.load(tmp_path / "bank.json")
    transformer_config = json.loads((tiny_model / "transformer" / "config.json").read_text())
    assert bank.model_fingerprint == fingerprint(transformer_config)
    assert (bank.height, bank.width, bank.num_inference_steps, bank.scorer) == (32, 32, 4, "fidelity")
    assert bank.no_cache_entry().id == "no-cache"
    assert bank.no_cache_entry().quality["fidelity"] == pytest.approx(150.0)
    macs = [entry.macs for entry in bank.entries]
    assert macs == sorted(macs) and macs[-1] == bank.no_cache_entry().macs
    for entry in bank.entries:
        mask = entry.cache_schedule().mask
        assert mask[0].all(), "step 0 always recomputes"
        assert {"psnr", "ssim", "fidelity"} <= set(entry.quality)
    assert len(bank.entries) >= 2, "a front beyond no-cache"
    run = tmp_path / "run"
    for name in ("config.json", "state.json", "memo.jsonl", "references.safetensors", "pareto.png"):
        assert (run / name).is_file(), name

    before = memo_records(run)
    assert main(common(tiny_model, tmp_path, "--generations", "2", "--scorer-arg", "max_psnr=150")) == 0
    after = memo_records(run)
    assert after[: len(before)] == before, "earlier evaluations kept, none repeated"
    assert {r["generation"] for r in after[len(before):]} == {2}
    state = json.loads((run / "state.json").read_text())
    assert state["generation"] == 2 and len(state["history"]) == 3
    assert ScheduleBank.load(tmp_path / "bank.json").calibration["generations"] == 2

    # The same model from another folder (another checkout): the run resumes, nothing re-evaluated
    moved = tmp_path / "elsewhere" / tiny_model.name
    shutil.copytree(tiny_model, moved)
    assert main(common(moved, tmp_path, "--generations", "3", "--scorer-arg", "max_psnr=150")) == 0
    resumed = memo_records(run)
    assert resumed[: len(after)] == after and {r["generation"] for r in resumed[len(after):]} == {3}
    assert json.loads((run / "config.json").read_text())["evaluator"]["model"] == str(moved)


def test_a_blind_scorer_is_warned_about(tiny_model, tmp_path, capsys):
    # a random tiny model changes by < 1e-6 under caching: PSNR capped at 60 dB cannot see it
    assert main(common(tiny_model, tmp_path, "--generations", "0", "--no-plot")) == 0
    assert "barely varies" in capsys.readouterr().err


def test_latency_cost_is_measured_seconds(tiny_model, tmp_path):
    assert main(common(tiny_model, tmp_path, "--generations", "0", "--no-plot", "--cost", "latency",
                       "--population", "4", "--scorer-arg", "max_psnr=150")) == 0
    bank = ScheduleBank.load(tmp_path / "bank.json")
    assert bank.calibration["cost"] == "latency"
    records = memo_records(tmp_path / "run")
    costs = np.array([r["cost"] for r in records])
    no_cache_macs = max(r["macs"] for r in records)
    macs_ratios = np.array([r["macs"] / no_cache_macs for r in records])
    images = 2  # --num-prompts 2 x --seeds 0
    # a MACs cost would equal these ratios exactly (no-cache's would be 1.0)
    assert not np.isclose(costs, macs_ratios, rtol=1e-3, atol=0).any()
    # seconds per image of rendering: all images' rendering is part of the candidate's evaluation time
    assert (costs > 0).all()
    assert (costs * images <= np.array([r["seconds"] for r in records])).all()


def test_a_missing_model_folder_is_named(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def test_three_objective_calibration_writes_a_valid_bank(tiny_model, tmp_path):
    assert main(common(tiny_model, tmp_path, "--generations", "1", "--no-plot", "--objectives", "psnr,ssim",
                       "--scorer", "auto", "--scorer-arg", "max_psnr=150")) == 0
    bank = ScheduleBank.load(tmp_path / "bank.json")
    assert bank.objectives == ["psnr", "ssim"] and bank.quality_metric == "psnr" and bank.scorer == "fidelity"
    assert bank.calibration["objectives"] == ["psnr", "ssim"]
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert {len(p["F"]) for p in state["population"]} == {3}, "(-psnr, -ssim, cost)"
    points = np.array([[-e.quality["psnr"], -e.quality["ssim"], e.macs] for e in bank.entries])
    from ecad.search.optimizer.hypervolume import nondominated_mask

    on_front = nondominated_mask(points)
    # the searched entries are the 3-objective front; a heuristic may sit behind it within its noise
    assert all(on_front[i] or e.source == "heuristic" for i, e in enumerate(bank.entries))
    assert any(e.source == "ecad" for e in bank.entries)


def test_unknown_objective_is_named(tiny_model, tmp_path, capsys):
    assert main(common(tiny_model, tmp_path, "--objectives", "psnr,sharpness")) == 2
    assert "unknown objective 'sharpness'" in capsys.readouterr().err
    assert main(common(tiny_model, tmp_path, "--objectives", "reward")) == 2
    assert "name the reward scorer" in capsys.readouterr().err


def test_racing_surrogate_and_validation_split_write_intervals(tiny_model, tmp_path):
    args = common(tiny_model, tmp_path, "--generations", "1", "--no-plot", "--num-prompts", "3",
                  "--scorer-arg", "max_psnr=150", "--racing", "0.34", "--surrogate", "2", "--validation-prompts", "2")
    assert main(args) == 0
    bank = ScheduleBank.load(tmp_path / "bank.json")
    validation = bank.calibration["validation_prompts"]
    assert len(validation) == 2 and not set(validation) & set(bank.calibration["prompts"])
    for entry in bank.entries:
        assert set(entry.validation) >= {"psnr", "ssim", "fidelity"}
        low, high = entry.interval["psnr"]
        assert low <= entry.validation["psnr"] <= high
    assert bank.no_cache_entry().validation["psnr"] == pytest.approx(150.0)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["racing"]["first_fraction"] == 0.34 and config["surrogate"]["pool_factor"] == 2
    assert (tmp_path / "run" / "validation-2" / "memo.jsonl").is_file()
    # rerunning resumes: nothing new is rendered, for the search or the validation
    before = (tmp_path / "run" / "validation-2" / "memo.jsonl").read_text()
    assert main(args) == 0
    assert (tmp_path / "run" / "validation-2" / "memo.jsonl").read_text() == before


def comparable_state(run) -> dict:
    state = json.loads((run / "state.json").read_text())
    for record in state["history"]:
        record.pop("seconds"), record.pop("evaluated")
    return state


def test_actions_search_seeds_real_v2_heuristics_writes_a_servable_v2_bank_and_resumes_identically(tiny_model, tmp_path):
    from ecad.cli.calibrate import ACTIONS
    from ecad.generate import generate, load_pipeline
    from ecad.heuristics import heuristic_suite
    from ecad.schedule import FORECAST
    from ecad.search import genome

    assert ACTIONS == genome.ACTIONS
    args = ["--actions", "reuse,forecast,skip", "--no-plot", "--scorer-arg", "max_psnr=150"]
    assert main(common(tiny_model, tmp_path / "a", "--generations", "1", *args)) == 0
    assert main(common(tiny_model, tmp_path / "a", "--generations", "2", *args)) == 0  # resumed, extended
    assert main(common(tiny_model, tmp_path / "b", "--generations", "2", *args)) == 0  # straight
    assert comparable_state(tmp_path / "a" / "run") == comparable_state(tmp_path / "b" / "run")
    untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in memo_records(tmp_path / run / "run")]
               for run in ("a", "b")]
    assert untimed[0] == untimed[1]

    records = memo_records(tmp_path / "a" / "run")
    config = json.loads((tmp_path / "a" / "run" / "config.json").read_text())
    assert config["evaluator"]["actions"] == ["reuse", "forecast", "skip"]
    bank = ScheduleBank.load(tmp_path / "a" / "bank.json")
    layout = bank.no_cache_entry().cache_schedule().layout
    suite = heuristic_suite(layout, 4)
    labelled = {r["label"]: r["key"] for r in records if r["label"]}
    # every heuristic seeded as its real schedule: keys are the v2 schedules' hashes
    assert {"taylorseer-2", "block-skip-2"} <= set(labelled) and set(labelled) <= set(suite)
    assert all(labelled[name] == suite[name].hash for name in labelled)
    schedules = [entry.cache_schedule() for entry in bank.entries]
    assert bank.calibration["actions"] == ["recompute", "reuse", "forecast", "skip"]
    searched = [s for s in schedules if not s.is_reuse_only]
    assert searched, "the front holds schedules only the richer actions express"
    pipe = load_pipeline(tiny_model)
    for schedule in searched[:2]:  # what serving does with an entry: entry.cache_schedule() into generate
        images = generate(pipe, ["a red square"], [0], bank.setting, schedule)
        assert images.isfinite().all()
    assert any((s.actions == FORECAST).any() or s.skip.any() for s in searched)


def test_reuse_only_actions_are_the_v1_search(tiny_model, tmp_path):
    from ecad.heuristics import heuristic_suite

    assert main(common(tiny_model, tmp_path, "--generations", "1", "--no-plot", "--actions", "reuse",
                       "--scorer-arg", "max_psnr=150")) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert set(config["space"]) == {"shape", "fixed_steps"} and config["space"]["fixed_steps"] == 1
    assert "actions" not in config["evaluator"], "v1 run folders still resume"
    records = memo_records(tmp_path / "run")
    bank = ScheduleBank.load(tmp_path / "bank.json")
    suite = heuristic_suite(bank.no_cache_entry().cache_schedule().layout, 4)
    labels = {r["label"] for r in records if r["label"]}
    assert labels == {name for name, s in suite.items() if s.is_reuse_only}, "no lookalike of a forecast heuristic"
    assert all(entry.cache_schedule().is_reuse_only for entry in bank.entries)
    assert {r["key"] for r in records if r["label"] == "fora-2"} == {suite["fora-2"].hash}


def test_unknown_action_is_named(tiny_model, tmp_path, capsys):
    assert main(common(tiny_model, tmp_path, "--actions", "reuse,teleport")) == 2
    assert "teleport" in capsys.readouterr().err
    assert main(common(tiny_model, tmp_path, "--actions", "skip,guidance")) == 2  # no component action
    assert "need reuse or forecast beside skip, guidance" in capsys.readouterr().err
    assert main(common(tiny_model, tmp_path, "--actions", "reuse,guidance", "--guidance", "1")) == 2
    assert "--actions guidance needs classifier-free guidance" in capsys.readouterr().err


def test_fitted_cost_is_the_models_predicted_seconds_relative_to_no_cache(tiny_model, tmp_path, capsys):
    from ecad.cost import FittedCost
    from ecad.heuristics import heuristic_suite

    # one second per block that runs, plus 10 per image: block skipping is what saves time here
    fitted = FittedCost(("count:block_run", "images"), (1.0, 10.0), hardware="test")
    (tmp_path / "fit.json").write_text(json.dumps(fitted.to_dict()))
    assert main(common(tiny_model, tmp_path, "--cost", "fitted")) == 2
    assert "--cost-model" in capsys.readouterr().err
    assert main(common(tiny_model, tmp_path, "--generations", "0", "--no-plot", "--cost", "fitted",
                       "--cost-model", str(tmp_path / "fit.json"), "--scorer-arg", "max_psnr=150")) == 0
    records = {r["label"]: r for r in memo_records(tmp_path / "run") if r["label"]}
    bank = ScheduleBank.load(tmp_path / "bank.json")
    assert bank.calibration["cost"] == "fitted"
    skip = heuristic_suite(bank.no_cache_entry().cache_schedule().layout, 4)["block-skip-2"]
    # PixArt batches guidance into one transformer call per step
    assert skip.skip.any() and records["no-cache"]["cost"] == 1.0
    assert records["block-skip-2"]["cost"] == pytest.approx(((~skip.skip).sum() + 10) / (skip.skip.size + 10))
    assert records["fora-2"]["cost"] == 1.0, "reusing components saves nothing in this model"


def test_renders_from_another_run_give_the_records_rendering_would_under_the_new_cost(tiny_model, tmp_path, capsys):
    from ecad.cost import FittedCost

    fitted = FittedCost(("count:block_run", "images"), (1.0, 10.0), hardware="test")
    (tmp_path / "fit.json").write_text(json.dumps(fitted.to_dict()))
    base = ["--model", str(tiny_model), "--steps", "4", "--num-prompts", "2", "--seeds", "0", "--population", "8",
            "--scorer", "fidelity", "--scorer-arg", "max_psnr=150", "--validation-prompts", "2", "--no-plot",
            "--no-progress"]

    def run(name, *extra):
        return main([*base, "--run-dir", str(tmp_path / name), "--out", str(tmp_path / f"{name}.json"), *extra])

    fitted_cost = ["--cost", "fitted", "--cost-model", str(tmp_path / "fit.json")]
    assert run("macs", "--generations", "1") == 0  # the source: the same search under MACs
    assert run("rendered", "--generations", "0", *fitted_cost) == 0  # what rendering under the fitted cost gives
    assert run("reused", "--generations", "0", *fitted_cost, "--renders-from", str(tmp_path / "macs")) == 0

    source = {r["key"]: r for r in memo_records(tmp_path / "macs")}
    reused = {r["key"]: r for r in memo_records(tmp_path / "reused")}
    rendered = {r["key"]: r for r in memo_records(tmp_path / "rendered")}
    assert set(reused) == set(source) >= set(rendered)
    assert all(r["images"] == 0 and r["generation"] == 0 for r in reused.values()), "nothing rendered by this run"
    for key, record in rendered.items():  # bit-exact scores; the cost is the fitted one, not the source's
        assert reused[key]["metrics"] == record["metrics"] == source[key]["metrics"]
        assert reused[key]["cost"] == record["cost"] and reused[key]["macs"] == record["macs"]
    assert any(reused[k]["cost"] != source[k]["cost"] for k in rendered), "the cost was recomputed"
    state = json.loads((tmp_path / "reused" / "state.json").read_text())
    assert state["history"][0]["images_total"] == 0
    # validation scores too: the source's are reused; entries only this front has (the fitted cost
    # ranks other schedules onto it) are rendered
    source_validation = {r["key"]: r for r in memo_records(tmp_path / "macs" / "validation-2")}
    validation = {r["key"]: r for r in memo_records(tmp_path / "reused" / "validation-2")}
    assert set(source_validation) <= set(validation)
    for key, record in validation.items():
        assert (record["images"] == 0) == (key in source_validation)
        if key in source_validation:
            assert record["metrics"] == source_validation[key]["metrics"]
    assert ScheduleBank.load(tmp_path / "reused.json").calibration["cost"] == "fitted"
    # a searched record keeps the name it has in the source's bank (it counts as generation 0 here)
    searched = {k: f"ecad-g{r['generation']}-{k[:8]}" for k, r in source.items() if not r["label"]}
    assert {k: reused[k].get("origin") for k in searched} == searched
    assert any(name.startswith("ecad-g1-") for name in searched.values())
    assert all("origin" not in reused[k] for k in source if k not in searched), "seeds keep their labels"
    source_ids = {e.cache_schedule().hash: e.id for e in ScheduleBank.load(tmp_path / "macs.json").entries}
    reused_ids = {e.cache_schedule().hash: e.id for e in ScheduleBank.load(tmp_path / "reused.json").entries}
    assert all(reused_ids[h] == source_ids[h] for h in set(source_ids) & set(reused_ids))

    # a run that renders differently (other prompts) is refused, naming what differs; so is a latency cost
    capsys.readouterr()
    assert run("other", "--generations", "0", *fitted_cost, "--num-prompts", "3",
               "--renders-from", str(tmp_path / "macs")) == 2
    assert "prompts" in capsys.readouterr().err
    assert not (tmp_path / "other" / "memo.jsonl").exists() or not memo_records(tmp_path / "other")
    assert run("latency", "--generations", "0", "--cost", "latency", "--renders-from", str(tmp_path / "macs")) == 2
    assert "latency" in capsys.readouterr().err
    assert run("nowhere", "--generations", "0", "--renders-from", str(tmp_path / "nowhere")) == 2
    assert "not a calibration run folder" in capsys.readouterr().err

    # a run that searches one more action (guidance reuse) starts from the source's renders, re-encoded
    # in its wider gene space; a run searching fewer actions than the source is refused
    from ecad.schedule import BlockLayout
    from ecad.search.genome import Genome

    wider = ("reuse", "forecast", "skip", "guidance")
    assert run("guided", "--generations", "0", "--actions", ",".join(wider), "--renders-from", str(tmp_path / "macs")) == 0
    guided = {r["key"]: r for r in memo_records(tmp_path / "guided")}
    assert set(source) <= set(guided)
    config = json.loads((tmp_path / "guided" / "config.json").read_text())
    genome = Genome(BlockLayout.from_dict(config["task"]["layout"]), 4, wider)
    for key, record in source.items():
        assert guided[key]["images"] == 0 and guided[key]["metrics"] == record["metrics"]
        schedule = genome.decode(genome.space.unpack(guided[key]["bits"]))
        assert schedule.hash == key and not schedule.guidance_reuse.any()
    capsys.readouterr()
    assert run("narrow", "--generations", "0", "--actions", "reuse", "--renders-from", str(tmp_path / "guided")) == 2
    assert "searched actions this run does not (forecast, guidance, skip)" in capsys.readouterr().err


def test_seed_bank_warm_starts_the_initial_population(tiny_model, tmp_path, capsys):
    first = tmp_path / "first"
    first.mkdir()
    assert main(common(tiny_model, first, "--generations", "1")) == 0
    bank = ScheduleBank.load(first / "bank.json")
    second = tmp_path / "second"
    second.mkdir()
    assert main(common(tiny_model, second, "--generations", "0", "--seed-bank", str(first / "bank.json"))) == 0
    records = {r["key"]: r for r in memo_records(second / "run")}
    hashes = {entry.cache_schedule().hash for entry in bank.entries}
    assert hashes <= set(records), "every entry of the seed bank is in the initial population"
    assert all(records[h]["generation"] == 0 for h in hashes)
    labels = {records[h]["label"] for h in hashes}
    assert any(label and label.startswith("bank:") for label in labels)
    assert json.loads((second / "run" / "config.json").read_text())["seed_banks"] == [str(first / "bank.json")]
    warm = ScheduleBank.load(second / "bank.json")
    searched = {e.id for e in bank.entries if e.source == "ecad"}
    # the same candidates scored the same way: the first front's searched entries, under their ids
    assert searched and searched <= {e.id for e in warm.entries if e.source == "ecad"}

    other = tmp_path / "other"
    other.mkdir()
    args = common(tiny_model, other, "--generations", "0", "--seed-bank", str(first / "bank.json"))
    args[args.index("--steps") + 1] = "6"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--seed-bank" in err and "4 steps, not 6 steps" in err


def test_quality_floor_and_step_mutation_are_recorded_and_bad_values_named(tiny_model, tmp_path, capsys):
    args = common(tiny_model, tmp_path, "--generations", "2", "--no-plot", "--objectives", "psnr,ssim",
                  "--scorer", "auto", "--scorer-arg", "max_psnr=150", "--quality-floor", "psnr=20",
                  "--step-mutation", "0.5")
    assert main(args) == 0
    bank = ScheduleBank.load(tmp_path / "bank.json")
    assert bank.calibration["quality_floors"] == [{"metric": "psnr", "minimum": 20.0}]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["quality_floors"] == [{"metric": "psnr", "minimum": 20.0}]
    assert config["genetic"]["step_mutation_prob"] == 0.5 and config["genetic"]["step_planes"] == 3
    capsys.readouterr()
    assert main(args[:-1] + ["0.2"]) == 2, "a run folder refuses another step-mutation setting"
    assert "holds a run with different settings (genetic)" in capsys.readouterr().err
    assert main(common(tiny_model, tmp_path / "x", "--objectives", "psnr", "--quality-floor", "ssim=0.5")) == 2
    assert "--quality-floor ssim=0.5" in capsys.readouterr().err
    assert main(common(tiny_model, tmp_path / "y", "--step-mutation", "2")) == 2
    assert "--step-mutation is a probability in [0, 1], got 2.0" in capsys.readouterr().err


def test_bank_metadata_writes_the_model_folder_relative_to_the_bank(tmp_path):
    from ecad.bank import portable_paths

    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    kwargs = {"component_kwargs": {"scenes-reward": {"model_dir": str(model)}}, "other": [str(model), "x"]}
    assert portable_paths(kwargs, str(model), tmp_path / "schedules" / "m") == {
        "component_kwargs": {"scenes-reward": {"model_dir": "../../models/m"}}, "other": ["../../models/m", "x"]}


def test_merging_two_runs_writes_the_front_over_both_with_their_validation(tiny_model, tmp_path, capsys):
    from ecad.search.optimizer.hypervolume import nondominated_mask
    from ecad.search.merge import main as merge

    def calibrate(name, *extra):
        args = ["--model", str(tiny_model), "--steps", "4", "--num-prompts", "2", "--seeds", "0", "--population", "8",
                "--objectives", "psnr,ssim", "--scorer-arg", "max_psnr=150", "--validation-prompts", "2",
                "--generations", "1", "--no-plot", "--no-progress", "--run-dir", str(tmp_path / name),
                "--out", str(tmp_path / f"{name}.json"), *extra]
        assert main(args) == 0
        return ScheduleBank.load(tmp_path / f"{name}.json")

    a, b = calibrate("a"), calibrate("b", "--seed", "1", "--step-mutation", "0.5")
    assert merge([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "merged.json"),
                  "--plot", str(tmp_path / "merged.png")]) == 0
    png = (tmp_path / "merged.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 2 * 7 * 110  # one panel per objective (psnr, ssim), 7 in each
    merged = ScheduleBank.load(tmp_path / "merged.json")
    assert merged.calibration["validation_prompts"] == a.calibration["validation_prompts"]
    assert [r["run_dir"] for r in merged.calibration["merged_runs"]] == [str(tmp_path / "a"), str(tmp_path / "b")]
    # the merged bank's searched entries are the front over both banks' entries, with their validation
    by_hash = {e.cache_schedule().hash: e for bank in (a, b) for e in bank.entries}
    union = list(by_hash.values())
    on_front = nondominated_mask(np.array([[-e.quality["psnr"], -e.quality["ssim"], e.macs] for e in union]))
    front = {e.cache_schedule().hash for e, keep in zip(union, on_front) if keep}
    merged_hashes = {e.cache_schedule().hash for e in merged.entries}
    assert front <= merged_hashes <= set(by_hash)
    for entry in merged.entries:
        assert entry.validation == by_hash[entry.cache_schedule().hash].validation

    calibrate("c", "--steps", "5")
    capsys.readouterr()
    assert merge([str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "bad.json")]) == 2
    assert "is another task" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()
