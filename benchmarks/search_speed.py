r"""Times the search: forward+backward of the supernet and one search iteration per method.

    python benchmarks/search_speed.py --configs=S,M --methods=all --xla=off,on --learners=1,2

Prints one JSON line per case: the first step's seconds (tracing and compiling, apart
from the steady state), median/min/max milliseconds per step over --steps timed steps
after --warmup untimed ones, the peak resident memory of the process that ran the case,
and, per method, the ratio of its median over the median of one forward+backward pass of
the same supernet measured in the same run (``passes``), next to the passes the method
is expected to cost (``expected_passes``, README "Choosing a hypergradient method"). Each case runs in
its own process, so peak memory is that case's own. Inputs are fixed random tensors: the
input pipeline is not timed. --json=PATH also writes the lines to a file, --markdown=PATH
the table of docs/benchmarks.md, captioned with the date, machine and commit.

Configs (docs/design.md §7): S = batch 16, 5 cells, 8 channels, 32×32; M = batch 64, 8 cells,
16 channels, 32×32. --learners=2 runs K=2 learners with R=2 rounds (S = 4 stages).
Each case builds its engine as a search does (il_tf/learning/build.py), with the memory and
compile plan a search of its method chooses (il_tf/learning/plan.py); --[no]graph_optimizer,
--[no]constant_folding, --[no]segmented_gradients and --edges=single,wide set those parts
instead (SearchConfig.graph_optimizer, ... and darts_supernet.wide_edges). Each case's
JSON line gives the plan it ran with.
--spaces=darts,mobilenet_v2 measures the DARTS supernet of the config and the
MobileNetV2-style Keras builder of il_tf/spaces/examples/mobilenet.py (at the settings of
gin_configs/search/choices_mobilenet_cifar10.gin) at the config's batch and image size, in
the same run, each against its own forward+backward.
--partial_channels=none,4 measures the plain DARTS supernet and the PC-DARTS one (1/4 of
the channels through the mixed ops) in the same run, each against its own forward+backward.
--profile adds, per case, where a timed step's wall time goes: each compiled function's
calls and exclusive milliseconds per step (nested calls subtracted), the peak resident
memory sampled while it ran, and the rest as ``python`` (host code between calls); and the
same for the first step, with each function's tracing apart (``first_step_profile``), and
each first call's resident memory before, after tracing, after running and after giving the
C allocator's free memory back (``malloc_trim``; so a --profile run's peak can be lower).
"""

from __future__ import annotations

import collections
import ctypes
import functools
import itertools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run as a script: the repository root holds the `benchmarks` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags  # noqa: E402

from benchmarks import report  # noqa: E402
from il_tf.learning import hypergradients  # noqa: E402

CONFIGS = {
    "S": {"batch": 16, "num_cells": 5, "channels": 8, "image_size": 32},
    "M": {"batch": 64, "num_cells": 8, "channels": 16, "image_size": 32},
}
# One forward+backward pass (the unit of "passes"), then every hypergradient method.
METHODS = ("forward_backward", *hypergradients.METHODS)
NUM_CLASSES = 10
SPACES = ("darts", "mobilenet_v2")
# The example builder's settings in gin_configs/search/choices_mobilenet_cifar10.gin.
MOBILENET_V2 = {"stem": 16, "stages": [[16, 1, 1], [24, 2, 2], [32, 3, 2], [64, 2, 2]], "last": 128}

FLAGS = flags.FLAGS
flags.DEFINE_list("configs", ["S"], f"configs to run: {sorted(CONFIGS)}")
flags.DEFINE_list("methods", ["all"], f"'all' or some of {list(METHODS)}")
flags.DEFINE_list("xla", ["off"], "'off', 'on' or both (jit_compile)")
flags.DEFINE_list("learners", ["1"], "1 (K=1, R=1: DARTS) and/or 2 (K=2, R=2)")
flags.DEFINE_integer("steps", 10, "timed steps per case")
flags.DEFINE_integer("warmup", 2, "untimed steps before timing (the first one is reported)")
flags.DEFINE_list(
    "partial_channels", ["none"], "'none' (plain DARTS) and/or PC-DARTS partial-channel K values"
)
flags.DEFINE_bool(
    "graph_optimizer",
    None,
    "grappler on or off (SearchConfig.graph_optimizer); unset: the search's plan",
)
flags.DEFINE_bool(
    "constant_folding",
    None,
    "grappler's constant folding (SearchConfig.constant_folding); unset: the search's plan",
)
flags.DEFINE_integer("batch", None, "override the configs' batch size (None: the config's)")
flags.DEFINE_bool(
    "profile", False, "report each compiled function's calls, ms and memory per step (Linux)"
)
flags.DEFINE_list(
    "edges",
    ["auto"],
    "'auto' (the search's plan, the default), 'single' (each edge by itself) and/or 'wide' "
    "(a cell's edges from one state as one op per candidate op: darts_supernet.wide_edges)",
)
flags.DEFINE_integer(
    "cell_parts",
    1,
    "segments per DARTS cell body (darts_supernet.cell_parts): less memory for the exact "
    "chain and segment-wise gradients",
)
flags.DEFINE_bool(
    "segmented_gradients",
    None,
    "every gradient one segment at a time, recomputing (SearchConfig.segmented_gradients); "
    "unset: the search's plan",
)
flags.DEFINE_string("json", None, "also write the cases' records (and the machine) to this file")
flags.DEFINE_string("markdown", None, "also write the captioned Markdown table to this file")
flags.DEFINE_list("spaces", ["darts"], f"search spaces to measure: some of {list(SPACES)}")
flags.DEFINE_string("case", None, "internal: run one case (JSON) in this process")


@functools.cache
def _libc() -> ctypes.CDLL:
    # glibc, for malloc_trim: --profile is Linux-only (it also reads /proc).
    return ctypes.CDLL("libc.so.6")


#: /proc (resident memory now) and glibc (malloc_trim) are there: --profile needs both.
LINUX = sys.platform.startswith("linux")


def rss_mb() -> float:
    """This process's resident memory now, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class CallTimes:
    """Calls and exclusive wall seconds per named function (nested calls' time subtracted)."""

    def __init__(self):
        self.seconds: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()
        # The highest resident memory sampled while a function was the innermost call.
        self.peak_mb: collections.Counter = collections.Counter()
        # Seconds spent tracing (building the graph) at a function's first call.
        self.trace_seconds: collections.Counter = collections.Counter()
        self._traced: set[int] = set()
        #: Each function's first call: [name, trace s, first run s, resident MB before it,
        #: after tracing, after the run, after malloc_trim, the graph's ops] (what
        #: compiling costs in memory).
        self.first_calls: list[list] = []
        self._nested: list[float] = []
        self._names: list[str] = []
        threading.Thread(target=self._sample_memory, daemon=True).start()

    def _sample_memory(self) -> None:
        while True:
            rss = rss_mb()
            if self._names:
                name = self._names[-1]
                self.peak_mb[name] = max(self.peak_mb[name], rss)
            time.sleep(0.02)

    def wrap(self, name: str, fn):
        """``fn``, timed under ``name``."""

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._nested.append(0.0)
            self._names.append(name)
            started, traced = time.perf_counter(), 0.0
            try:
                if id(fn) not in self._traced and hasattr(fn, "get_concrete_function"):
                    # Tracing apart from the first run (graph optimization, execution).
                    self._traced.add(id(fn))
                    before = rss_mb()
                    graph = fn.get_concrete_function(*args, **kwargs).graph
                    traced = time.perf_counter() - started
                    self.trace_seconds[name] += traced
                    after_trace = rss_mb()
                    out = fn(*args, **kwargs)
                    run = time.perf_counter() - started - traced
                    after_run = rss_mb()
                    # What of it the C allocator holds as free memory: returned by a trim.
                    _libc().malloc_trim(0)
                    self.first_calls.append(
                        [name, round(traced, 1), round(run, 1)]
                        + [round(before), round(after_trace), round(after_run), round(rss_mb())]
                        + [len(graph.get_operations())]
                    )
                    return out
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                self._names.pop()
                self.seconds[name] += elapsed - traced - self._nested.pop()
                self.calls[name] += 1
                if self._nested:
                    self._nested[-1] += elapsed

        return timed

    def instrument(self, engine) -> None:
        """Times every compiled function of ``engine`` (step functions and updates)."""
        steps = engine.steps
        make = steps._function

        def function(name, key, *args, **kwargs):
            # A segment's functions by segment: their memory is what differs.
            label = f"{name}[{key}]" if name.startswith("segment") else name
            return self.wrap(label, make(name, key, *args, **kwargs))

        steps._function = function
        make_apply = engine._apply_function
        engine._apply_function = lambda index: self.wrap(
            "apply_encoder" if index is None else "apply_head", make_apply(index)
        )
        for name in ("_apply_arch", "_prepare", "_set_anchor"):
            setattr(engine, name, self.wrap(name.lstrip("_"), getattr(engine, name)))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.peak_mb.clear()
        self.trace_seconds.clear()

    def per_step(self, steps: int, total_seconds: float) -> dict:
        """{name: [calls, ms, peak RSS MB, trace ms]} per step, largest first.

        ``python`` is the rest (host code between calls). ms excludes tracing, which is
        given apart (first calls only). The peak is the highest resident memory sampled
        (every 20 ms) while the function ran, 0 when no sample fell inside it.
        """
        traced = sum(self.trace_seconds.values())
        out = {n: [self.calls[n] / steps, 1000 * s / steps] for n, s in self.seconds.items()}
        rest = total_seconds - sum(self.seconds.values()) - traced
        out["python"] = [0, 1000 * rest / steps]
        ranked = sorted(out.items(), key=lambda item: -item[1][1])
        return {
            n: [
                round(c, 2),
                round(ms, 1),
                round(self.peak_mb[n]),
                round(1000 * self.trace_seconds[n] / steps, 1),
            ]
            for n, (c, ms) in ranked
        }


def run_case(case: dict) -> dict:
    """Builds the engine for one case, times its steps, returns the measurements."""
    from il_tf.native_logs import import_tensorflow

    tf = import_tensorflow()
    import numpy as np

    from il_tf.data.learners import Learner
    from il_tf.learning.build import LearnerShape, build_engine
    from il_tf.learning.plan import choose_plan, grappler_options
    from il_tf.learning.search_config import SearchConfig
    from il_tf.spaces.factories import darts_supernet

    cfg = CONFIGS[case["config"]]
    k = case["learners"]
    rounds = 2 if k > 1 else 1
    size, batch = cfg["image_size"], case.get("batch") or cfg["batch"]
    supernet_kwargs = {"channels": cfg["channels"], "num_cells": cfg["num_cells"]}
    if case.get("partial_channels"):
        supernet_kwargs["partial_channels"] = int(case["partial_channels"])
    supernet_kwargs["wide_edges"] = {"wide": True, "single": False}.get(case.get("edges"))
    supernet_kwargs["cell_parts"] = case.get("cell_parts", 1)
    # The search's own config and builder; the learners' data is replaced by fixed
    # random batches of their shape.
    supernet = functools.partial(darts_supernet, **supernet_kwargs)
    if case.get("space") == "mobilenet_v2":
        from il_tf.spaces.choice_space import ChoiceSupernet
        from il_tf.spaces.examples.mobilenet import mobilenet_v2_backbone

        supernet = functools.partial(ChoiceSupernet, mobilenet_v2_backbone, MOBILENET_V2)
    names = [f"learner{i}" for i in range(k)]
    config = SearchConfig(
        learners=tuple(Learner(name) for name in names),
        supernet=supernet,
        method=case["method"] if case["method"] != "forward_backward" else "first_order",
        rounds=rounds,
        jit_compile=case["xla"],
        graph_optimizer=case.get("graph_optimizer"),
        constant_folding=case.get("constant_folding"),
        segmented_gradients=case.get("segmented_gradients"),
        draw=False,
    )
    shapes = [LearnerShape(name, NUM_CLASSES, (size, size, 3), batch) for name in names]
    plan = choose_plan(config, shapes)
    # As the search sets them (Plan.graph_options); the case has the process to itself,
    # so nothing is restored.
    options = grappler_options(plan.graph_optimizer, plan.constant_folding)
    if options:
        tf.config.optimizer.set_experimental_options(options)
    strategy = tf.distribute.get_strategy()
    engine = build_engine(config, shapes, strategy, total_weight_steps=1000, plan=plan)
    schedule = engine.schedule
    calls = CallTimes() if case.get("profile") else None
    if calls:
        calls.instrument(engine)
    rng = np.random.default_rng(0)

    def batch_of():
        return (
            tf.constant(rng.normal(size=(batch, size, size, 3)).astype(np.float32)),
            tf.constant(rng.integers(0, NUM_CLASSES, batch).astype(np.int32)),
        )

    train = [[tuple(batch_of() for _ in stage.learners)] for stage in schedule.stages]
    val = [batch_of() for _ in range(k)]

    if case["method"] == "forward_backward":
        # One pass: the compiled gradient of one learner's loss on one batch.
        arch, enc, heads = engine.steps.read()

        def step():
            grads = engine.steps.val_gradient(0, arch, enc, heads[0], train[0][0][0])
            float(tf.linalg.global_norm(engine.steps.local(grads[2])))

    else:

        def step():
            engine.iteration(train, val)

    if calls:
        calls.reset()  # the first step's profile is the step's alone
    started, started_cpu = time.perf_counter(), time.process_time()
    step()
    first_step_s = time.perf_counter() - started
    first_step_cpu_s = time.process_time() - started_cpu
    first_profile = {}
    if calls:
        first_profile = {
            "first_step_profile": calls.per_step(1, first_step_s),
            "first_calls": calls.first_calls,
        }
    for _ in range(case["warmup"] - 1):
        step()
    # Resident memory after each timed step (Linux): flat unless something is kept per step.
    times, cpu_times, rss_after = [], [], []
    if calls:
        calls.reset()
    for _ in range(case["steps"]):
        t, c = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - t) * 1000)
        # CPU time of all the process's threads: less sensitive to other jobs on the
        # machine than the wall time, so ratios of it compare runs made at other times.
        cpu_times.append((time.process_time() - c) * 1000)
        if LINUX:
            rss_after.append(round(rss_mb()))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    profile = {"profile": calls.per_step(len(times), sum(times) / 1000)} if calls else {}
    return {
        **case,
        "rounds": rounds,
        "batch": batch,
        "plan": plan.record(),
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "median_cpu_ms": round(statistics.median(cpu_times), 1),
        "first_step_s": round(first_step_s, 1),
        "first_step_cpu_s": round(first_step_cpu_s, 1),
        "expected_passes": expected_passes(case["method"], schedule),
        "peak_rss_mb": round(peak_kb / 1024),
        "rss_mb_after_steps": rss_after,
        **first_profile,
        **profile,
    }


def expected_passes(method: str, schedule) -> int | None:
    """Forward+backward passes of one iteration (``HypergradientMethod.passes``)."""
    if method == "forward_backward":
        return 1
    return hypergradients.get_method(method).expected_passes(
        schedule.num_learners, len(schedule.stages), schedule.steps_per_stage
    )


def markdown(results: list[dict]) -> str:
    """The table of docs/benchmarks.md: one row per case."""
    rows = []
    for r in results:
        head = [
            r.get("space", "darts"),
            r["config"],
            f"{r['learners']}, {2 if r['learners'] > 1 else 1}",
            r["method"],
        ]
        if "error" in r:
            rows.append(head + [f"failed: {r['error']}", "", "", "", ""])
            continue
        passes = "1 (base)" if r["method"] == "forward_backward" else "–"
        if "passes" in r:
            passes = f"{r['passes']:.2f} ({r['passes_cpu']:.2f})"
        expected = r.get("expected_passes")
        rows.append(
            head
            + [
                f"{r['first_step_s']:.1f}",
                f"{r['median_ms']:.0f} ({r['min_ms']:.0f}–{r['max_ms']:.0f})",
                passes,
                "–" if expected is None else expected,
                r["peak_rss_mb"],
            ]
        )
    header = [
        "space",
        "config",
        "K, R",
        "method",
        "first step s",
        "step ms, median (min–max)",
        "passes (CPU)",
        "expected passes",
        "peak RSS MB",
    ]
    return report.markdown_table(header, rows, right=6)


def case_error(proc: subprocess.CompletedProcess) -> str:
    """Why a case's process failed: the signal that killed it, or its last error line."""
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        hint = " (the kernel's out-of-memory killer, most likely)" if sig == "SIGKILL" else ""
        return f"killed by {sig}{hint}"
    lines = [line for line in proc.stderr.strip().splitlines() if "Error" in line]
    return (lines or proc.stderr.strip().splitlines() or ["no output"])[-1]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.case:
        print(json.dumps(run_case(json.loads(FLAGS.case))), flush=True)
        return
    unknown = [c for c in FLAGS.configs if c not in CONFIGS]
    methods = list(METHODS) if FLAGS.methods == ["all"] else FLAGS.methods
    bad = [m for m in methods if m not in METHODS]
    if unknown or bad:
        raise app.UsageError(f"unknown configs {unknown} or methods {bad}")
    if FLAGS.steps < 1 or FLAGS.warmup < 1:
        raise app.UsageError("--steps and --warmup must be >= 1")
    if FLAGS.profile and not LINUX:
        raise app.UsageError(
            f"--profile reads /proc and calls glibc's malloc_trim: Linux only, not {sys.platform}"
        )
    if FLAGS.batch is not None and FLAGS.batch < 1:
        raise app.UsageError(f"--batch={FLAGS.batch}: must be >= 1")
    partial = [None if x == "none" else x for x in FLAGS.partial_channels]
    if any(x is not None and (not x.isdigit() or int(x) < 1) for x in partial):
        raise app.UsageError(
            f"--partial_channels={FLAGS.partial_channels}: 'none' or integers >= 1 allowed"
        )
    if not FLAGS.edges or any(e not in ("auto", "wide", "single") for e in FLAGS.edges):
        raise app.UsageError(f"--edges={FLAGS.edges}: 'auto', 'wide' and/or 'single' allowed")
    if not FLAGS.spaces or any(x not in SPACES for x in FLAGS.spaces):
        raise app.UsageError(f"--spaces={FLAGS.spaces}: some of {list(SPACES)} allowed")
    if not 1 <= FLAGS.cell_parts <= 5:
        raise app.UsageError(f"--cell_parts={FLAGS.cell_parts}: 1 to 5 (steps + 1) allowed")
    machine = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": sys.platform,
    }
    print(json.dumps({"machine": machine, "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
    info, command, results = report.machine(), report.command_line(), []
    for space, config, pc, xla, edges in itertools.product(
        FLAGS.spaces, FLAGS.configs, partial, FLAGS.xla, FLAGS.edges
    ):
        # One forward+backward baseline per supernet and XLA setting, then each method and K.
        base = None
        cases = [("forward_backward", 1)] + [
            (method, learners)
            for learners in sorted({int(x) for x in FLAGS.learners})
            for method in methods
            if method != "forward_backward"
        ]
        for method, learners in cases:
            case = {
                "space": space,
                "config": config,
                "method": method,
                "xla": xla == "on",
                "learners": learners,
                "steps": FLAGS.steps,
                "warmup": FLAGS.warmup,
                "partial_channels": pc,
                "edges": edges,
                "batch": FLAGS.batch or CONFIGS[config]["batch"],
                "graph_optimizer": FLAGS.graph_optimizer,
                "constant_folding": FLAGS.constant_folding,
                "segmented_gradients": FLAGS.segmented_gradients,
                "cell_parts": FLAGS.cell_parts,
                "profile": FLAGS.profile,
            }
            proc = subprocess.run(
                [sys.executable, __file__, f"--case={json.dumps(case)}"],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                result = {**case, "error": case_error(proc)}
            else:
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                if method == "forward_backward":
                    base = result
                elif base:
                    result["passes"] = round(result["median_ms"] / base["median_ms"], 2)
                    result["passes_cpu"] = round(result["median_cpu_ms"] / base["median_cpu_ms"], 2)
            print(json.dumps(result), flush=True)
            results.append(result)
            report.write(FLAGS.json, FLAGS.markdown, info, command, results, markdown(results))


if __name__ == "__main__":
    app.run(main)
