"""Isolation Forest trained in scikit-learn, exported to ONNX, scored in onnxruntime.

Why
---
An Isolation Forest makes no distributional assumption: it isolates a row with random
axis-aligned cuts and calls it anomalous when few cuts suffice. That suits tabular
process data with skewed, multi-modal or clipped characteristics where Hotelling's
normal ellipse is wrong. Training uses scikit-learn; the run-time path needs only
``onnxruntime`` and ``numpy`` (the worker image does not carry scikit-learn's training
code, and ONNX is readable from any language). ``score = -score_samples`` (scikit-learn's
convention is high = normal); the graph outputs ``score_samples`` exactly as scikit-learn
defines it and the wrapper negates it once.

Two exporters, chosen explicitly (never a silent fallback):

- ``exporter="fused"`` (default): one ``ai.onnx.ml.TreeEnsembleRegressor`` holding every
  tree, whose leaf weights are the isolation path lengths ``depth + c(n_leaf) - 1``, then
  ``-2^(-Σ/(T·c(ψ)))``. Each tree's feature subset is folded into its split feature ids and
  each float64 threshold is rounded *down* to float32, so ``x <= t`` decides exactly as
  scikit-learn does on float32 input. Exporting 100 trees takes milliseconds and
  onnxruntime scores faster than scikit-learn (see ``linewatch bench tabular-detectors``).
- ``exporter="skl2onnx"``: skl2onnx's stock converter with its ``score_samples`` output.
  It emits a subgraph per tree (Gather, TreeEnsemble, two LabelEncoders, arithmetic), so
  conversion grows quadratically (about 12 s for 100 trees here) and the graph scores
  several times slower than scikit-learn itself. Kept as the reference implementation;
  the unit tests check both graphs against scikit-learn.

The saved directory holds ``metadata.json`` (parameters, ``n_features``, exporter,
ONNX opsets) and ``model.onnx``; loading never unpickles anything.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> det = IsolationForestONNX(n_estimators=50, seed=0).fit(rng.normal(size=(500, 3)))
>>> s = det.score(np.array([[0.0, 0.0, 0.0], [6.0, -6.0, 6.0]]))
>>> bool(s[1] > s[0])
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from linewatch.detectors.base import ParamsMixin, as_batch, check_fitted
from linewatch.errors import ConfigError

ONNX_FILE = "model.onnx"
INPUT_NAME = "X"
OUTPUT_NAME = "score_samples"
#: Opsets every onnxruntime >= 1.18 executes (ai.onnx.ml 3 has TreeEnsembleRegressor v3).
ONNX_OPSET, ONNX_ML_OPSET = 17, 3
EXPORTERS = ("fused", "skl2onnx")


def average_path_length(n: np.ndarray) -> np.ndarray:
    """``c(n)``: mean path length of an unsuccessful BST search in ``n`` points (Liu et al. 2008).

    >>> average_path_length(np.array([1, 2, 256])).round(4).tolist()
    [0.0, 1.0, 10.2448]
    """
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _float32_floor(t: np.ndarray) -> np.ndarray:
    """Largest float32 <= t, so ``x32 <= floor32(t)`` iff ``x32 <= t`` for every float32 ``x32``."""
    f = t.astype(np.float32)
    return np.where(f.astype(np.float64) > t, np.nextafter(f, np.float32(-np.inf)), f).astype(np.float32)


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Depth of every node (root 0); children always have larger ids than their parent in sklearn trees."""
    depth = np.zeros(left.size, dtype=np.float64)
    for i in range(left.size):  # one pass over a few hundred nodes per tree, at export time only
        if left[i] >= 0:
            depth[left[i]] = depth[right[i]] = depth[i] + 1.0
    return depth


def fused_onnx(model: Any, n_features: int) -> onnx.ModelProto:
    """One TreeEnsembleRegressor graph computing a fitted IsolationForest's ``score_samples``."""
    attrs: dict[str, list] = {
        k: []
        for k in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_modes",
            "nodes_values",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "target_treeids",
            "target_nodeids",
            "target_weights",
        )
    }
    for t, (est, features) in enumerate(zip(model.estimators_, model.estimators_features_, strict=True)):
        tree = est.tree_
        left, right = tree.children_left, tree.children_right
        leaf = left < 0
        ids = np.arange(tree.node_count)
        feat = np.where(leaf, 0, np.asarray(features)[np.where(leaf, 0, tree.feature)])
        # scikit-learn counts the root as depth 1 and adds c(n) - 1; with the root at 0 that is depth + c(n).
        path = _node_depths(left, right) + average_path_length(tree.n_node_samples)
        attrs["nodes_treeids"] += [t] * tree.node_count
        attrs["nodes_nodeids"] += ids.tolist()
        attrs["nodes_featureids"] += feat.astype(np.int64).tolist()
        attrs["nodes_modes"] += np.where(leaf, "LEAF", "BRANCH_LEQ").tolist()
        attrs["nodes_values"] += np.where(leaf, 0.0, _float32_floor(tree.threshold)).tolist()
        attrs["nodes_truenodeids"] += np.where(leaf, 0, left).tolist()
        attrs["nodes_falsenodeids"] += np.where(leaf, 0, right).tolist()
        attrs["target_treeids"] += [t] * int(leaf.sum())
        attrs["target_nodeids"] += ids[leaf].tolist()
        attrs["target_weights"] += path[leaf].tolist()
    denominator = len(model.estimators_) * float(average_path_length(np.array([model.max_samples_]))[0])
    attrs["target_ids"] = [0] * len(attrs["target_nodeids"])
    trees = helper.make_node(
        "TreeEnsembleRegressor",
        [INPUT_NAME],
        ["path_sum"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        base_values=[0.0],
        **attrs,
    )
    inv = -1.0 / denominator if denominator > 0 else 0.0
    consts = [
        helper.make_tensor("neg_inv_denominator", TensorProto.FLOAT, [], [inv]),
        helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
        helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
    ]
    nodes = [
        trees,
        helper.make_node("Mul", ["path_sum", "neg_inv_denominator"], ["exponent"]),
        helper.make_node("Pow", ["two", "exponent"], ["anomaly"]),
        helper.make_node("Neg", ["anomaly"], ["neg_anomaly"]),
        helper.make_node("Reshape", ["neg_anomaly", "flat"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "isolation_forest_score_samples",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None])],
        initializer=consts,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET)],
        producer_name="linewatch",
    )
    proto.ir_version = 8  # readable by every onnxruntime the project supports
    onnx.checker.check_model(proto)
    return proto


def skl2onnx_onnx(model: Any, n_features: int) -> onnx.ModelProto:
    """skl2onnx's stock IsolationForest graph, with its ``score_samples`` output renamed to ours."""
    from skl2onnx import to_onnx  # training-time dependency only

    proto = to_onnx(
        model,
        np.zeros((1, n_features), dtype=np.float32),
        target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
        options={id(model): {"score_samples": True}},
        final_types=None,
    )
    names = [o.name for o in proto.graph.output]
    keep = proto.graph.output[names.index("score_samples")]
    input_name = proto.graph.input[0].name
    for node in proto.graph.node:
        node.input[:] = [INPUT_NAME if n == input_name else n for n in node.input]
    proto.graph.input[0].name = INPUT_NAME
    del proto.graph.output[:]
    proto.graph.output.append(keep)
    return proto


class IsolationForestONNX(ParamsMixin):
    """Isolation Forest scored through onnxruntime; high = anomalous.

    Parameters
    ----------
    n_estimators, max_samples, max_features:
        As in :class:`sklearn.ensemble.IsolationForest` (``max_samples=256`` is the paper's ψ).
    exporter:
        ``"fused"`` (default) or ``"skl2onnx"``; see the module docstring.
    n_threads:
        onnxruntime intra-op threads; 1 keeps a worker on one core and scores deterministic.
    seed:
        ``random_state`` of the forest.
    """

    name: ClassVar[str] = "isolation_forest"
    fitted_arrays = ("n_features_",)

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        max_samples: int = 256,
        max_features: float = 1.0,
        exporter: str = "fused",
        n_threads: int = 1,
        seed: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.exporter = exporter
        self.n_threads = n_threads
        self.seed = seed
        self.onnx_model_: bytes | None = None
        self.n_features_: int | None = None
        self.estimator_: Any = None  # the scikit-learn forest, in memory after fit only (for parity checks)
        self._session: ort.InferenceSession | None = None

    def fit(self, X: np.ndarray) -> Self:
        """Train the forest on known-good rows and export it to ONNX."""
        from sklearn.ensemble import IsolationForest  # training-time dependency only

        if self.exporter not in EXPORTERS:
            raise ConfigError(f"exporter={self.exporter!r}; use one of {EXPORTERS}")
        X = as_batch(X)
        model = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, X.shape[0]),
            max_features=self.max_features,
            random_state=self.seed,
            n_jobs=1,
        ).fit(X.astype(np.float32))
        build = fused_onnx if self.exporter == "fused" else skl2onnx_onnx
        self.onnx_model_ = build(model, X.shape[1]).SerializeToString()
        self.n_features_ = X.shape[1]
        self.estimator_ = model
        self._session = None
        return self

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the onnxruntime session behind; it is rebuilt on first use."""
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def _get_session(self) -> ort.InferenceSession:
        check_fitted(self, "onnx_model_")
        if self._session is None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.n_threads
            opts.inter_op_num_threads = 1
            self._session = ort.InferenceSession(self.onnx_model_, opts, providers=["CPUExecutionProvider"])
        return self._session

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """scikit-learn's ``score_samples`` (high = normal), computed by the ONNX graph."""
        session = self._get_session()
        X = as_batch(X, n_features=self.n_features_).astype(np.float32)
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: X})
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def score(self, X: np.ndarray) -> np.ndarray:
        """``-score_samples``: in (0, 1], high = anomalous (0.5 ≈ average isolation depth)."""
        return -self.score_samples(X)

    def save(self, path: str | Path) -> None:
        """Parameters and ``n_features`` as usual; the forest itself as ``model.onnx`` beside them."""
        check_fitted(self, "onnx_model_")
        super().save(path)
        (Path(path) / ONNX_FILE).write_bytes(self.onnx_model_)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        det = super().load(path)
        det.onnx_model_ = (Path(path) / ONNX_FILE).read_bytes()
        return det
