"""Multi-fidelity promotion rule on hand-made rungs (ranks, crowding, ties, counts), the
experiment option, and the trial flow on a real Optuna study."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nas.schedulers.rungs import crowding_distance, promoted_count, promotes, rank_trials, select_promoted

ACC_MMACS = ["maximize", "minimize"]


def test_nondominated_first_then_crowding() -> None:
    # front 0: 0, 1, 2 (2 is interior, finite crowding); 3 and 4 are dominated
    rung = {0: [0.90, 30.0], 1: [0.80, 10.0], 2: [0.85, 20.0], 3: [0.70, 40.0], 4: [0.60, 50.0], 5: [0.84, 25.0]}
    assert rank_trials(rung, ACC_MMACS)[:3] == [0, 1, 2]
    # 6 trials, promote 1/3 -> exactly 2: the two boundary points of front 0, not the interior one
    assert select_promoted(rung, ACC_MMACS, 1 / 3) == [0, 1]
    assert promotes(1, rung, ACC_MMACS, 1 / 3) and not promotes(2, rung, ACC_MMACS, 1 / 3)
    # half: all of front 0 (3), never a dominated trial ahead of a non-dominated one
    assert select_promoted(rung, ACC_MMACS, 0.5) == [0, 1, 2]


def test_crowding_prefers_the_isolated_point() -> None:
    # one front of 5 (accuracy up, MMACs up); 2 sits alone in a wide gap, 3 is crowded by 4
    front = {0: [0.50, 10.0], 1: [0.55, 12.0], 2: [0.70, 30.0], 3: [0.88, 48.0], 4: [0.90, 50.0]}
    d = crowding_distance(list(front.values()))
    assert math.isinf(d[0]) and math.isinf(d[4])
    assert d[2] > d[1] and d[2] > d[3]
    assert d[2] == pytest.approx((0.88 - 0.55) / 0.40 + (48 - 12) / 40)
    assert select_promoted(front, ACC_MMACS, 0.6) == [0, 4, 2]


def test_ties_break_by_trial_number() -> None:
    same = {7: [0.8, 20.0], 3: [0.8, 20.0], 5: [0.8, 20.0], 9: [0.5, 40.0]}
    assert rank_trials(same, ACC_MMACS) == [3, 5, 7, 9]
    assert select_promoted(same, ACC_MMACS, 0.5) == [3, 5]
    # equal in one objective and better in the other dominates: 1 is behind 0 and 2
    weak = {0: [0.8, 20.0], 1: [0.8, 25.0], 2: [0.9, 25.0]}
    assert rank_trials(weak, ACC_MMACS)[-1] == 1


@pytest.mark.parametrize(("n", "promote", "expected"), [
    (2, 1 / 3, 0), (3, 1 / 3, 1), (5, 1 / 3, 1), (6, 1 / 3, 2), (9, 1 / 3, 3), (10, 0.5, 5), (4, 0.25, 1),
    (7, 0.5, 3),
])
def test_fraction_rounds_down(n: int, promote: float, expected: int) -> None:
    assert promoted_count(n, promote, 1) == expected
    rung = {i: [0.5 + i / 100, 10.0 + i] for i in range(n)}  # one front: every trial non-dominated
    assert len(select_promoted(rung, ACC_MMACS, promote)) == expected


def test_min_population_holds_promotion_back() -> None:
    rung = {0: [0.9, 10.0], 1: [0.1, 90.0], 2: [0.2, 80.0], 3: [0.3, 70.0]}
    assert select_promoted(rung, ACC_MMACS, 0.5, min_population=5) == []
    assert select_promoted(rung, ACC_MMACS, 0.5, min_population=4) == [0, 3]


def test_non_finite_never_promoted_but_counts() -> None:
    rung = {0: [math.nan, 10.0], 1: [0.5, 20.0], 2: [0.4, 30.0]}
    assert select_promoted(rung, ACC_MMACS, 2 / 3) == [1, 2]
    with pytest.raises(ValueError, match="trial 9"):
        promotes(9, rung, ACC_MMACS, 0.5)


# ------------------------------------------------------------------------------ the experiment option

def test_fidelity_option_is_validated(tiny_yaml) -> None:
    from nas.experiment import ExperimentError, load_experiment

    exp = load_experiment(tiny_yaml(extra='fidelity: {rungs: [1, 3, 9], promote: "1/3"}'))
    assert exp.fidelity is not None and exp.fidelity.promote == pytest.approx(1 / 3) and exp.fidelity.population == 3
    assert load_experiment(tiny_yaml()).fidelity is None
    for extra, words in [
        ("fidelity: {rungs: [3, 1]}", ["fidelity.rungs", "strictly increasing", "[3, 1]"]),
        ("fidelity: {rungs: [1]}", ["fidelity.rungs"]),
        ("fidelity: {rungs: [1, 2], promote: 1.5}", ["fidelity.promote", "1.5"]),
        ('fidelity: {rungs: [1, 2], promote: "1/0"}', ["fidelity.promote", "1/0"]),
        ("fidelity: {rungs: [1, 2], eta: 3}", ["fidelity.eta"]),
        ("fidelity: {rungs: [1, 2]}\nearly_stopping: {enabled: true}", ["fidelity", "early_stopping"]),
    ]:
        with pytest.raises(ExperimentError) as e:
            load_experiment(tiny_yaml(extra=extra))
        msg = str(e.value)
        assert "\n" not in msg and all(w in msg for w in words), msg
    with pytest.raises(ExperimentError, match="fidelity: rungs need a trained objective"):
        load_experiment(tiny_yaml(extra="fidelity: {rungs: [1, 2]}", objectives="[naswot, mmacs]"))


# ------------------------------------------------------------------------------ the study adapter

def test_decide_reads_the_rung_from_the_study(tiny_yaml) -> None:
    """The backends' question on a hand-made study: FAIL trials and paper presets are not in the
    rung's population, a preset always trains on, the asking trial's own values count."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from nas.experiment import load_experiment
    from nas.schedulers.rungs import decide

    exp = load_experiment(tiny_yaml(extra="fidelity: {rungs: [1, 3], promote: 0.5, min_population: 2}"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    rows = [(TrialState.PRUNED, {"rung_1": {"accuracy": 0.9, "mmacs": 1.0}}),   # 0 dominates everything
            (TrialState.FAIL, {"rung_1": {"accuracy": 0.1, "mmacs": 0.1}}),     # 1 a dead trial: left out
            (TrialState.PRUNED, {"rung_1": {"accuracy": 0.95, "mmacs": 0.5}, "reference_preset": "p"}),
            (TrialState.RUNNING, {"reference_preset": "p"})]                    # 3 a preset asking
    for state, attrs in rows:
        vals = None if state != TrialState.COMPLETE else [0.0, 0.0]
        study.add_trial(create_trial(state=state, values=vals, user_attrs=attrs))
    worse = {"accuracy": 0.5, "mmacs": 2.0}
    assert not decide(study, exp, 4, 1, worse)  # population {0, 4}: 1 promoted, trial 0
    assert decide(study, exp, 4, 1, {"accuracy": 0.92, "mmacs": 0.9})  # dominates trial 0
    assert decide(study, exp, 3, 1, worse)  # a preset always trains on
    # min_population 3: only {0, 4} count (the FAIL trial and the preset would make 3 or 4), so no promotion
    exp3 = load_experiment(tiny_yaml(extra="fidelity: {rungs: [1, 3], promote: 0.5, min_population: 3}"))
    assert not decide(study, exp3, 4, 1, {"accuracy": 0.99, "mmacs": 0.05})


# ------------------------------------------------------------------------------ the trial flow

def _simulate_asha(trials, names, directions, promote, population, n_rungs):
    """Sequential ASHA with one worker, replayed from the rung results the study holds (an
    architecture reaches the same result at a rung whichever trial trains it): before each trial,
    continue the best promotable paused trial, top rung down, else take the next new candidate;
    a trial trains rung by rung while it is in its rung's promoted fraction at that moment.
    Returns [(trial number, arch id, highest rung, paused trial it continues or None)]."""
    from nas.schedulers.rungs import select_promoted

    vec = {}
    for t in trials:
        for r in range(1, n_rungs + 1):
            if f"rung_{r}" in t.user_attrs:
                vec.setdefault(t.user_attrs["arch_id"], {})[r] = [t.user_attrs[f"rung_{r}"][o] for o in names]
    new = [t.user_attrs["arch_id"] for t in sorted(trials, key=lambda t: t.number) if "continues" not in t.user_attrs]
    pops = {r: {} for r in range(1, n_rungs + 1)}  # rung -> {number: vector}, one number per arch
    owner = {r: {} for r in range(1, n_rungs + 2)}  # rung -> {arch: number}
    paused, continued, out = {}, set(), []
    for number in range(len(trials)):
        job = None
        for r in range(n_rungs - 1, 0, -1):
            for k in select_promoted(pops[r], directions, promote, population):
                if paused.get(k, (None, 0))[1] == r and k not in continued and paused[k][0] not in owner[r + 1]:
                    job = (k, paused[k][0], r + 1)
                    break
            if job:
                break
        k, arch, start = job or (None, new.pop(0), 1)
        continued.add(k)
        top = start - 1
        for r in range(start, n_rungs + 1):
            pop = {m: v for m, v in pops[r].items() if m != owner[r].get(arch)}
            pop[number] = vec[arch][r]
            owner[r].setdefault(arch, number)
            pops[r][owner[r][arch]] = vec[arch][r]
            top = r
            if r < n_rungs and not promotes(number, pop, directions, promote, population):
                paused[number] = (arch, r)
                break
        out.append((number, arch, top, k))
    return out


def test_optuna_search_promotes_by_the_rule_prunes_the_rest_and_reads_by_rung(tmp_path, tiny_yaml, capsys) -> None:
    import json

    import optuna
    from optuna.trial import TrialState

    from nas.cli import main

    f = tiny_yaml(n=6, extra="fidelity: {rungs: [1, 2, 3], promote: 0.5, min_population: 2}")
    assert main(["search", str(f), "--no-progress"]) == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    trials = [t for t in study.get_trials() if "rung_1" in t.user_attrs]
    assert len(trials) == 6  # the tiny space fits the budget: all trained
    got = [(t.number, t.user_attrs["arch_id"], t.user_attrs["rung"], t.user_attrs.get("continues")) for t in trials]
    assert got == _simulate_asha(trials, ["accuracy", "mmacs"], ACC_MMACS, 0.5, 2, 3)
    assert {g[2] for g in got} >= {1, 3}  # some stopped at rung 1, some reached the top
    assert any(g[3] is not None for g in got)  # a paused trial was promoted later (ASHA)
    for t in trials:
        top = t.user_attrs["rung"]
        assert t.state == (TrialState.COMPLETE if top == 3 else TrialState.PRUNED)
        assert all(f"rung_{r}" in t.user_attrs for r in range(1, top + 1)) and f"rung_{top + 1}" not in t.user_attrs
        assert len(t.user_attrs["acc_history"]) == top  # train.epochs 1 x rung multiple
        assert t.user_attrs["rung_1"]["accuracy"] == pytest.approx(t.user_attrs["acc_epoch_1"])
        if top == 3:
            assert t.values[0] == pytest.approx(t.user_attrs["rung_3"]["accuracy"])
        if "continues" in t.user_attrs:  # the paused trial's rungs replayed from its kept weights, not retrained
            paused = study.trials[t.user_attrs["continues"]]
            assert t.user_attrs["rungs_resumed"] == paused.user_attrs["rung"] and t.params == paused.params
            for r in range(1, paused.user_attrs["rung"] + 1):
                assert t.user_attrs[f"rung_{r}"] == paused.user_attrs[f"rung_{r}"]
    # rung checkpoints are cleared when an architecture finishes the top rung; paused ones are kept
    best = {}
    for t in trials:
        best[t.user_attrs["arch_id"]] = max(best.get(t.user_attrs["arch_id"], 0), t.user_attrs["rung"])
    kept = {p.name.split(".")[0] for p in (tmp_path / "run" / "rungs").glob("*")}
    assert kept == {a for a, r in best.items() if r < 3}
    # pareto, status and export read one rung at a time (default: the top rung), one row per architecture
    db = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    top = {t.number: t.user_attrs["rung"] for t in study.get_trials() if "rung" in t.user_attrs}
    at1 = {t.number: t.user_attrs["rung_1"] for t in study.get_trials() if "rung_1" in t.user_attrs}
    capsys.readouterr()

    assert main(["pareto", "tiny", "--storage", db, "--json"]) == 0
    p3 = json.loads(capsys.readouterr().out)
    assert p3["rung"] == 3 and p3["n_complete"] == sum(v == 3 for v in top.values())
    assert p3["front"] and all(top[r["number"]] == 3 for r in p3["front"])
    assert main(["pareto", "tiny", "--storage", db, "--json", "--rung", "1"]) == 0
    p1 = json.loads(capsys.readouterr().out)
    assert p1["rung"] == 1 and p1["n_complete"] == len(best)  # every arch finished rung 1, counted once
    for r in p1["front"]:
        assert r["accuracy"] == pytest.approx(at1[r["number"]]["accuracy"])
    assert main(["pareto", "tiny", "--storage", db]) == 0
    assert "rung 3 of 3 (3 epochs)" in capsys.readouterr().out
    assert main(["pareto", "tiny", "--storage", db, "--rung", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--rung" in err and "1..3" in err and "4" in err

    assert main(["status", "tiny", "--storage", db, "--json"]) == 0
    per = json.loads(capsys.readouterr().out)["trials_per_rung"]
    assert per == {str(r): sum(v >= r for v in best.values()) for r in (1, 2, 3)}

    out = tmp_path / "exp"
    assert main(["export", "tiny", "--storage", db, "--pick", "max-accuracy", "--out", str(out), "--json",
                 "--retrain", "2", "--retrain-reference", "shufflenet_v1_g3_x0_5"]) == 0
    res = json.loads(capsys.readouterr().out)
    (ex,) = res["exports"]
    assert top[ex["trial"]] == 3 and res["rung"] == 3
    rt = ex["retrain"]
    assert rt["epochs"] == 2 and 0 <= rt["accuracy"] <= 1 and Path(rt["weights"]).is_file()
    assert rt["proxy_accuracy"] == pytest.approx(study.trials[ex["trial"]].user_attrs["rung_3"]["accuracy"])
    assert json.loads((out / "arch.json").read_text())["retrain"]["accuracy"] == rt["accuracy"]
    (ref,) = res["retrained_references"]
    assert ref["preset"] == "shufflenet_v1_g3_x0_5" and ref["epochs"] == 2 and 0 <= ref["accuracy"] <= 1
    assert main(["export", "tiny", "--storage", db, "--pick", "knee", "--out", str(out), "--retrain", "0"]) == 2


@pytest.mark.slow
def test_sigkill_inside_rung_2_then_resume_keeps_rung_1(tmp_path, tiny_yaml, held_search, wait_held) -> None:
    """Killed while training rung 2 (a hook holds the first rung-2 training: same point however busy
    the box), then `resume`: the finished trials are untouched, the killed trial's retry replays
    rung 1 from its checkpoint instead of training it, and its results equal an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys

    import optuna
    from optuna.trial import TrialState

    from nas.cli import main

    fid = "fidelity: {rungs: [1, 2, 3], promote: 0.5, min_population: 2}"
    f = tiny_yaml(n=6, extra=fid, search="heartbeat_interval: 1, grace_period: 2")
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    p, held = held_search(["search", str(f), "--no-progress"], after=0, seed=1)  # train.seed 0: rung 2 trains with 1
    wait_held(held, p)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    p.stderr.close()
    before = optuna.load_study(study_name="tiny", storage=url).get_trials()
    (inside,) = [t for t in before if t.state == TrialState.RUNNING]
    assert inside.user_attrs["rung"] == 1 and "rung_2" not in inside.user_attrs
    assert (tmp_path / "run" / "rungs" / f"{inside.user_attrs['arch_id']}.json").is_file()
    done = {t.number: (t.state, t.user_attrs) for t in before if t.state != TrialState.RUNNING}

    r = subprocess.run([sys.executable, "-m", "nas", "resume", "tiny", "--storage", url, "--run-dir",
                        str(tmp_path / "run"), "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    after = optuna.load_study(study_name="tiny", storage=url).get_trials()
    states = [t.state for t in after]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 6, states
    for t in after:
        if t.number in done:  # nothing finished ran again or changed
            assert (t.state, t.user_attrs) == done[t.number]
    (killed,) = [t for t in after if t.number == inside.number]
    assert killed.state == TrialState.FAIL and "worker lost" in killed.user_attrs["fail_reason"]
    (retry,) = [t for t in after if t.user_attrs.get("retry_of") == inside.number]
    assert retry.user_attrs["rungs_resumed"] == 1  # rung 1 replayed from the checkpoint, not retrained
    assert retry.user_attrs["rung_1"] == inside.user_attrs["rung_1"]
    assert retry.user_attrs["rung"] >= 2 and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    # only the retry, ASHA's continuations (which replay their paused trial's rungs) and a later sample of
    # an architecture an earlier trial trained (its kept rungs, keyed by arch id) replay; when the
    # resumed worker starts before the heartbeat grace ends, the sampler may draw such a duplicate first
    replayed = {t.number for t in after if "rungs_resumed" in t.user_attrs}
    continuations = {t.number for t in after if "continues" in t.user_attrs and t.state != TrialState.FAIL}
    duplicates = {t.number for t in after if any(o.number < t.number and o.user_attrs.get("arch_id") ==
                                                 t.user_attrs.get("arch_id") for o in after)}
    assert {retry.number} | continuations <= replayed <= {retry.number} | continuations | duplicates
    reached: dict[str, int] = {}
    for t in after:
        if t.state != TrialState.FAIL:
            reached[t.user_attrs["arch_id"]] = max(reached.get(t.user_attrs["arch_id"], 0), t.user_attrs["rung"])
    # kept rung weights: exactly the paused architectures that never went further
    assert {p.name.split(".")[0] for p in (tmp_path / "run" / "rungs").glob("*")} == {
        a for a, r in reached.items() if r < 3}

    # the resumed rungs equal an uninterrupted search of the same experiment
    g = tmp_path / "clean"
    g.mkdir()
    clean_yaml = g / "tiny.yaml"
    clean_yaml.write_text(f.read_text().replace(str(tmp_path / "run"), str(g / "run")))
    assert main(["search", str(clean_yaml), "--no-progress"]) == 0
    clean = optuna.load_study(study_name="tiny", storage=f"sqlite:///{g / 'run' / 'study.db'}").get_trials()
    # (the furthest trial of that architecture: a continuation replays its paused trial's rungs)
    same = max((t for t in clean if t.user_attrs.get("arch_id") == retry.user_attrs["arch_id"]
                and t.state != TrialState.FAIL), key=lambda t: t.user_attrs["rung"])
    assert same.user_attrs["rung"] >= 2  # both trained rung 2 (the killed run promoted it, like the clean one)
    for k in range(1, min(retry.user_attrs["rung"], same.user_attrs["rung"]) + 1):
        assert retry.user_attrs[f"rung_{k}"]["accuracy"] == pytest.approx(same.user_attrs[f"rung_{k}"]["accuracy"])


@pytest.mark.slow
def test_ray_and_optuna_backends_promote_the_same_trials(tmp_path, tiny_yaml, need, monkeypatch) -> None:
    """The same seeded experiment on both backends (one worker each): the same candidates reach
    the same rungs, with the same rung results, and the same trials are PRUNED."""
    import optuna

    from nas.backends.optuna_search import run_optuna_search
    from nas.backends.ray_search import run_ray_search
    from nas.experiment import load_experiment

    need("ray.tune")  # a dev dependency: missing under CI is a failure, not a skip
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    fid = "fidelity: {rungs: [1, 2, 3], promote: 0.5, min_population: 2}"
    seen = {}
    for backend in ("optuna", "ray"):
        d = tmp_path / backend
        d.mkdir()
        f = tiny_yaml(name=f"mf_{backend}", n=6, extra=fid, search=f"backend: {backend}")
        f.write_text(f.read_text().replace(str(tmp_path / "run"), str(d / "run")))
        exp = load_experiment(f)
        run_ray_search(exp) if backend == "ray" else run_optuna_search(exp, show_progress=False)
        trials = optuna.load_study(study_name=exp.study_name, storage=exp.storage_url).get_trials()
        seen[backend] = [(t.user_attrs["arch_id"], t.state.name, t.user_attrs["rung"],
                          [round(t.user_attrs[f"rung_{r}"]["accuracy"], 6) for r in range(1, t.user_attrs["rung"] + 1)])
                         for t in sorted(trials, key=lambda t: t.number)]
    assert seen["optuna"] == seen["ray"]
    assert {s[2] for s in seen["ray"]} >= {1, 3}  # promotions and prunings both happened


def test_default_rung_is_the_highest_a_search_trial_reached() -> None:
    """A reference preset always reaches the top rung; the default front is not built on it alone."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from nas.analysis.frame import trials_frame
    from nas.schedulers.rungs import at_rung

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "mmacs"])
    study.set_user_attr("experiment", {"fidelity": {"rungs": [1, 3]}})
    r1 = {"accuracy": 0.5, "mmacs": 2.0}
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.9, 9.0], user_attrs={
        "reference_preset": "p", "rung": 2, "rung_1": r1, "rung_2": {"accuracy": 0.9, "mmacs": 9.0}}))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"rung": 1, "rung_1": r1}))
    df = at_rung(trials_frame(study), study)
    assert df.attrs["rung"] == 1
    assert list(df["state"]) == ["COMPLETE", "COMPLETE"] and list(df["search_state"]) == ["COMPLETE", "PRUNED"]
    assert list(df["accuracy"]) == [0.5, 0.5]  # the preset too is read at rung 1, never at its own top
    assert at_rung(trials_frame(study), study, 2).attrs["rung"] == 2


# ------------------------------------------------------------------------------ ASHA: pause, promote later, continue

def test_paused_trial_continues_from_its_kept_rung_without_retraining(tmp_path, tiny_yaml, monkeypatch) -> None:
    """Not promoted at rung 1: the weights and record are kept. A continuation loads them, replays
    rung 1's record (train_proxy is not called for it) and trains only rung 2's extra epochs from
    the kept weights; a sampled duplicate of the paused arch replays and stops without training."""
    import torch
    from torch import nn

    import objectives.accuracy as acc
    from nas.experiment import load_experiment
    from nas.schedulers.rungs import RungCheckpoint, train_rungs
    from objectives.accuracy import TrainResult

    exp = load_experiment(tiny_yaml(extra="fidelity: {rungs: [1, 3], promote: 0.5}"))
    calls: list[tuple[int, torch.Tensor]] = []

    def fake_train(model, data, cfg, report):  # one "epoch" adds 1 to every weight
        calls.append((cfg.epochs, model.weight.detach().clone()))
        with torch.no_grad():
            model.weight += cfg.epochs
        acc_ = float(model.weight.detach().mean()) / 10
        for e in range(1, cfg.epochs + 1):
            report(e, acc_)
        return TrainResult(accuracy=acc_, best_accuracy=acc_, epochs_run=cfg.epochs, seconds=0.1,
                           images_per_second=1.0, history=[(e, acc_) for e in range(1, cfg.epochs + 1)],
                           stopped_early=False, mean_train_loss=1.0)

    monkeypatch.setattr(acc, "train_proxy", fake_train)

    def run(continues: int | None, promote: bool) -> tuple[dict, int | None, nn.Linear]:
        model = nn.Linear(2, 2, bias=False)
        nn.init.zeros_(model.weight)
        attrs: dict = {}
        tr, stopped = train_rungs(model, None, exp, RungCheckpoint(tmp_path, "arch", "fp"), lambda e, a: False,
                                  lambda r, v: promote, attrs.__setitem__, lambda a: {"accuracy": a, "mmacs": 1.0},
                                  continues_rung=continues)
        return attrs, stopped, model

    paused, stopped, _ = run(continues=None, promote=False)
    assert stopped == 1 and paused["rung"] == 1 and [c[0] for c in calls] == [1]
    assert sorted(p.name for p in tmp_path.joinpath("rungs").iterdir()) == ["arch.json", "arch.r1.safetensors"]

    calls.clear()
    dup, stopped, _ = run(continues=None, promote=True)  # the sampler drew the paused arch again
    assert stopped == 1 and calls == [] and dup["rung_1"] == paused["rung_1"] and dup["rungs_resumed"] == 1

    cont, stopped, model = run(continues=1, promote=False)  # paused at rung 1
    assert stopped is None and cont["rungs_resumed"] == 1 and cont["rung"] == 2
    assert cont["rung_1"] == paused["rung_1"]  # replayed, not recomputed
    (only,) = calls  # rung 2 alone trained: 3 - 1 extra epochs, from rung 1's kept weights (all ones)
    assert only[0] == 2 and torch.equal(only[1], torch.ones(2, 2)) and torch.equal(model.weight, torch.full((2, 2), 3.0))
    assert cont["acc_epoch_1"] == paused["rung_1"]["accuracy"]  # rung 1's history replayed into this trial
    assert not list(tmp_path.joinpath("rungs").iterdir())  # the top rung finished: checkpoint cleared


def _study_with(rows):
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(directions=["maximize", "minimize"])
    for state, attrs in rows:
        vals = [attrs[f"rung_{attrs['rung']}"]["accuracy"], attrs[f"rung_{attrs['rung']}"]["mmacs"]] \
            if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(state=state, values=vals, user_attrs=attrs, params={"x": len(study.trials)},
                                     distributions={"x": IntDistribution(0, 100)}))
    return study


def test_one_architecture_counts_once_per_rung(tiny_yaml) -> None:
    """A paused trial and its continuation both hold rung 1 (replayed): the rung's population,
    trials per rung, the rung-1 front and the promotion question count the architecture once."""
    import optuna
    from optuna.trial import TrialState

    from nas.analysis.frame import trials_frame
    from nas.experiment import load_experiment
    from nas.schedulers.rungs import at_rung, decide, rung_population, trials_per_rung

    exp = load_experiment(tiny_yaml(extra="fidelity: {rungs: [1, 3], promote: 0.5, min_population: 2}"))
    a1, b1 = {"accuracy": 0.8, "mmacs": 1.0}, {"accuracy": 0.3, "mmacs": 2.0}
    study = _study_with([
        (TrialState.PRUNED, {"arch_id": "A", "rung": 1, "rung_1": a1}),
        (TrialState.PRUNED, {"arch_id": "B", "rung": 1, "rung_1": b1}),
        (TrialState.COMPLETE, {"arch_id": "A", "rung": 2, "rung_1": a1, "rung_2": {"accuracy": 0.9, "mmacs": 1.0},
                               "continues": 0}),
    ])
    study.set_user_attr("experiment", {"fidelity": {"rungs": [1, 3]}})
    study.set_user_attr("objectives", ["accuracy", "mmacs"])
    assert rung_population(study, 1, ["accuracy", "mmacs"]) == {0: [0.8, 1.0], 1: [0.3, 2.0]}
    assert trials_per_rung(study) == {1: 2, 2: 1}
    df = at_rung(trials_frame(study), study, 1)
    assert list(df["state"]) == ["COMPLETE", "COMPLETE", "OTHER_RUNG"] and df["accuracy"].notna().sum() == 2
    # a later duplicate of B asking at rung 1: B's earlier record is not a second competitor
    study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={"arch_id": "B"}))
    assert not decide(study, exp, 3, 1, {"accuracy": 0.5, "mmacs": 3.0})  # {0: A, 3: B'}: A promoted
    assert decide(study, exp, 3, 1, {"accuracy": 0.85, "mmacs": 0.9})
    # binding: with min_population 3, B counted once leaves 2 finished architectures (nothing promoted);
    # counted twice it would make 3 and promote the best of them, this dominating point
    exp3 = load_experiment(tiny_yaml(extra="fidelity: {rungs: [1, 3], promote: 0.5, min_population: 3}"))
    assert not decide(study, exp3, 3, 1, {"accuracy": 0.85, "mmacs": 0.9})


def test_next_promotion_scans_top_rung_down_and_promotes_once(tiny_yaml) -> None:
    from optuna.trial import TrialState

    from nas.experiment import load_experiment
    from nas.schedulers.rungs import enqueue_promotion, next_promotion

    exp = load_experiment(tiny_yaml(extra="fidelity: {rungs: [1, 2, 4], promote: 0.5, min_population: 2}"))
    r = lambda a, m: {"accuracy": a, "mmacs": m}  # noqa: E731
    study = _study_with([
        (TrialState.PRUNED, {"arch_id": "A", "rung": 1, "rung_1": r(0.9, 1.0)}),   # 0: promotable at rung 1
        (TrialState.PRUNED, {"arch_id": "B", "rung": 1, "rung_1": r(0.2, 5.0)}),   # 1
        (TrialState.PRUNED, {"arch_id": "C", "rung": 1, "rung_1": r(0.1, 6.0)}),   # 2
        (TrialState.PRUNED, {"arch_id": "D", "rung": 2, "rung_1": r(0.3, 4.0), "rung_2": r(0.6, 4.0)}),  # 3
        (TrialState.PRUNED, {"arch_id": "E", "rung": 1, "rung_1": r(0.25, 4.5)}),  # 4
    ])
    # rung 2 holds D alone (below min_population): nothing there; rung 1 of 5 promotes 2: A, then D (gone on)
    assert next_promotion(study, exp).number == 0
    study.add_trial(__import__("optuna").trial.create_trial(
        state=TrialState.PRUNED, user_attrs={"arch_id": "F", "rung": 2, "rung_1": r(0.05, 9.0),
                                             "rung_2": r(0.1, 9.0)}))  # 5: rung 2 now has 2 -> D promoted there
    assert next_promotion(study, exp).number == 3  # the top rung first
    assert enqueue_promotion(study, exp) == 3
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs == {"continues": 3} and waiting.system_attrs["fixed_params"] == study.trials[3].params
    assert next_promotion(study, exp).number == 0  # D is being continued: once only
    assert enqueue_promotion(study, exp) == 0
    # rung 1 now holds 6 (F too): 3 promoted, A, then D (gone on), then E, dominated by D alone
    assert enqueue_promotion(study, exp) == 4
    assert next_promotion(study, exp) is None


def test_a_promotion_queued_twice_trains_once(tiny_yaml) -> None:
    """Two workers may queue the same paused trial's continuation at once: the later one is not run."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from nas.backends.optuna_objective import TrialObjective
    from nas.experiment import load_experiment

    exp = load_experiment(tiny_yaml(extra="fidelity: {rungs: [1, 3], promote: 0.5}"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"rung": 1}))
    study.add_trial(create_trial(state=TrialState.RUNNING, user_attrs={"continues": 0}))  # another worker's
    study.enqueue_trial({}, user_attrs={"continues": 0})

    def never(*a, **k):
        raise AssertionError("a duplicate continuation must not train")

    study.optimize(TrialObjective(exp, 10, evaluate_fn=never), n_trials=1, catch=(Exception,))
    last = study.trials[-1]
    assert last.state == TrialState.FAIL and last.user_attrs["fail_reason"] == "not run: trial 0 is continued by an earlier trial"
