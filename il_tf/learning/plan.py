"""The memory and compile plan of a search, chosen from its method, space and device.

Four settings change how a search computes, not what: TensorFlow's graph optimizer
(``SearchConfig.graph_optimizer``), its constant folding
(``SearchConfig.constant_folding``), segment-wise gradients
(``SearchConfig.segmented_gradients``) and a DARTS cell's wide edges
(``darts_supernet.wide_edges``). Each is None by default, and then this rule chooses it:

- **Exact links** (``chain_exact``: a second-order function compiled per supernet
  segment): gradients segment-wise and constant folding off. The compiled second-order
  functions dominate its memory; constant folding would store activation-sized constant
  tensors in each of them, and whole-network gradients would add the whole network's
  activations on top.
- **The whole chain in one graph** (``unrolled``) through more than
  :data:`LONG_CHAIN_STEPS` steps: the graph optimizer off. Optimizing that graph
  takes far longer than the search's first steps themselves; without it they take
  more memory.
- **Wide edges** on a CPU when the first cells' feature maps (batch × height × width ×
  channels) are at most :data:`SMALL_FEATURE_MAPS`: the smaller graph compiles faster
  and steps at least as fast there, while on large feature maps the wide ops step
  slower (and on GPUs they were not measured, so they stay off).
- Everything else keeps TensorFlow's defaults: the graph optimizer and constant folding
  on, whole-network gradients.

An explicit value always wins. The plan is printed in one line when a search starts and
recorded in its ``run.json`` (``settings.plan``); since its parts change only how the
same values are computed, a restart may change them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import Iterator, Sequence

import tensorflow as tf

from il_tf.learning import hypergradients
from il_tf.learning.search_config import SearchConfig, factory_settings

#: Steps (S·T) through which an ``unrolled`` chain is compiled with the graph optimizer.
LONG_CHAIN_STEPS = 2
#: The largest first-cell feature maps (batch × height × width × channels elements) of
#: wide edges on a CPU: a batch of 16 RGB 32×32 images at 8 channels (benchmarks/
#: search_speed.py's config S), where both forms step equally fast.
SMALL_FEATURE_MAPS = 16 * 32 * 32 * 8


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a search compiles and what it keeps in memory.

    Attributes:
      graph_optimizer, constant_folding, segmented_gradients: as ``SearchConfig``'s.
      wide_edges: ``darts_supernet.wide_edges``; None when the supernet has no such
        setting.
      chosen: the parts this rule chose (the others were given).
      reasons: per chosen part, why.
    """

    graph_optimizer: bool
    constant_folding: bool
    segmented_gradients: bool
    wide_edges: bool | None
    chosen: tuple[str, ...] = ()
    reasons: tuple[tuple[str, str], ...] = ()

    def record(self) -> dict:
        """The plan as ``run.json`` records it: every part, and which were chosen."""
        record = dataclasses.asdict(self)
        del record["reasons"]
        record["chosen"] = list(self.chosen)
        return record

    def describe(self) -> str:
        """The plan in one line: each part, and whether it was chosen (and why) or given."""
        reasons = dict(self.reasons)
        parts = [
            ("graph_optimizer", "graph optimizer", "on" if self.graph_optimizer else "off"),
            ("constant_folding", "constant folding", "on" if self.constant_folding else "off"),
            (
                "segmented_gradients",
                "gradients",
                "segment-wise" if self.segmented_gradients else "whole-network",
            ),
        ]
        if self.wide_edges is not None:
            parts.append(("wide_edges", "edges", "wide" if self.wide_edges else "single"))
        shown = []
        for name, label, value in parts:
            how = f"auto: {reasons[name]}" if name in reasons else "auto"
            shown.append(f"{label} {value} ({how if name in self.chosen else 'set'})")
        settings = "SearchConfig.graph_optimizer, .constant_folding, .segmented_gradients"
        if self.wide_edges is not None:
            settings += ", darts_supernet.wide_edges"
        return f"plan: {', '.join(shown)}; to override: {settings}"

    @contextlib.contextmanager
    def graph_options(self) -> Iterator[None]:
        """Sets grappler's options of this plan for the block, restores them after it."""
        # Grappler's options are process-wide and read when a function first runs, so
        # they are set for the whole search.
        options = grappler_options(self.graph_optimizer, self.constant_folding)
        if not options:
            yield
            return
        previous = tf.config.optimizer.get_experimental_options()
        tf.config.optimizer.set_experimental_options(options)
        try:
            yield
        finally:
            tf.config.optimizer.set_experimental_options(
                {
                    "disable_meta_optimizer": previous.get("disable_meta_optimizer", False),
                    "constant_folding": previous.get("constant_folding", True),
                }
            )

    def supernet(self, config: SearchConfig):
        """``config.supernet`` with the plan's wide edges when the plan chose them."""
        if "wide_edges" not in self.chosen:
            return config.supernet
        return functools.partial(config.supernet, wide_edges=self.wide_edges)


def grappler_options(graph_optimizer: bool, constant_folding: bool) -> dict[str, bool]:
    """Grappler's options for these settings ({}: TensorFlow's defaults)."""
    options = {}
    if not graph_optimizer:
        options["disable_meta_optimizer"] = True
    if not constant_folding:
        options["constant_folding"] = False
    return options


def device_kind() -> str:
    """``GPU`` when TensorFlow sees a GPU, else ``CPU``."""
    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"


def _has_wide_edges(factory) -> bool:
    """Whether the supernet factory takes a ``wide_edges`` setting."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    try:
        return "wide_edges" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read
        return False


def choose_plan(
    config: SearchConfig, learners: Sequence, space=None, device: str | None = None
) -> Plan:
    """The plan of a search of ``config`` (see the module docstring for the rule).

    ``learners`` have ``batch_size`` and ``image_shape`` (``LearnerData`` or
    ``il_tf.learning.build.LearnerShape``); ``space`` is the supernet (built without
    weights when not given); ``device`` ``CPU`` or ``GPU`` (default: what TensorFlow
    sees).
    """
    method = hypergradients.get_method(config.method)
    steps = config.make_schedule().num_steps
    values, reasons = {}, {}
    if method.link == "exact":
        values["segmented_gradients"] = True
        values["constant_folding"] = False
        reasons["segmented_gradients"] = reasons["constant_folding"] = "exact links"
    if method.link == hypergradients.WHOLE_GRAPH and steps > LONG_CHAIN_STEPS:
        values["graph_optimizer"] = False
        reasons["graph_optimizer"] = f"{config.method} through {steps} steps"
    wide_given = factory_settings(config.supernet)["arguments"].get("wide_edges")
    if _has_wide_edges(config.supernet) and wide_given is None:
        space = config.supernet() if space is None else space
        device = device or device_kind()
        channels = getattr(space, "channels", None)
        largest = max(
            learner.batch_size * learner.image_shape[0] * learner.image_shape[1]
            for learner in learners
        )
        small = channels is not None and largest * channels <= SMALL_FEATURE_MAPS
        values["wide_edges"] = device == "CPU" and small
        if device != "CPU":
            reasons["wide_edges"] = device
        else:
            reasons["wide_edges"] = "small feature maps" if small else "large feature maps"
    given = {
        "graph_optimizer": config.graph_optimizer,
        "constant_folding": config.constant_folding,
        "segmented_gradients": config.segmented_gradients,
    }
    chosen = [name for name, value in given.items() if value is None]
    if "wide_edges" in values:
        chosen.append("wide_edges")
    defaults = {"graph_optimizer": True, "constant_folding": True, "segmented_gradients": False}
    resolved = {
        name: (values.get(name, defaults[name]) if value is None else value)
        for name, value in given.items()
    }
    if _has_wide_edges(config.supernet):
        wide = values["wide_edges"] if "wide_edges" in values else bool(wide_given)
    else:
        wide = None
    return Plan(
        **resolved,
        wide_edges=wide,
        chosen=tuple(chosen),
        reasons=tuple((name, reasons[name]) for name in chosen if name in reasons),
    )
