"""Windowed autoencoder: reconstruction error of normal windows, scored in ONNX Runtime.

Why this detector exists
------------------------
An autoencoder squeezes each window (a feature vector per sensor, or the flattened raw
samples of a short multi-sensor window) through a narrow bottleneck and rebuilds it. It
can only rebuild what it saw in training, so a window from a healthy machine comes back
almost unchanged while a new pattern - a bearing tone, a current that no longer follows
load - comes back wrong *in the columns that changed*. Unlike a PCA it learns curved
relations between sensors (temperature rising with the square of current, say).

The network is scikit-learn's ``MLPRegressor`` trained ``Z -> Z`` with a symmetric bottleneck
(``hidden + (bottleneck,) + reversed(hidden)``), so training needs no torch. ``fit`` converts it
with ``skl2onnx`` and from then on every score runs in ``onnxruntime``: the saved model is
``model.onnx`` plus ``metadata.json``/``arrays.npz`` holding the input standardisation
(robust: median / MAD, so a few glitches in the training data do not set the scale). The
run-time path imports numpy and onnxruntime only. The squared error is computed inside the
ONNX graph, so the exported model carries its post-processing too.

Explanation
-----------
``explain(X)`` is the per-column squared reconstruction error in standardised units (rows
sum to ``score``); ``explain_groups(X)`` sums it per sensor when ``groups`` names the
sensor of each column (e.g. ``"motor_de"`` for all of ``motor_de.rms``, ``motor_de.kurtosis``,
…), and ``worst_group(X)`` names the worst sensor of each window. Reconstruction error is
an honest but blurred attribution: the network rebuilds an off-pattern window as the nearest
pattern it knows, so healthy sensors correlated with the broken one get some error too.
It names the right sensor when that sensor's own columns move most (the common case: one
sensor's features change), less reliably for a subtle break of a cross-sensor relation,
where ``dynamic_pca``'s SPE contributions are the better witness.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> t = rng.normal(size=(600, 1))
>>> X = np.hstack([t, 2 * t, -t]) + 0.05 * rng.normal(size=(600, 3))
>>> ae = WindowAutoencoder(hidden=(16,), bottleneck=1, max_iter=300, groups=("a", "b", "c"), seed=0).fit(X)
>>> s = ae.score(np.array([[0.5, 1.0, -0.5], [0.5, 1.0, 2.0]]))
>>> bool(s[1] > 10 * s[0])          # the third sensor broke the pattern
True
>>> ae.worst_group(np.array([[0.5, 1.0, 2.0]]))
['c']
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from linewatch.detectors.base import ParamsMixin, as_batch, check_fitted
from linewatch.detectors.robust_mahalanobis import robust_scale
from linewatch.detectors.rowwise import rowwise_matmul
from linewatch.errors import ConfigError, DataError

if TYPE_CHECKING:
    import onnxruntime as ort

MODEL_FILE = "model.onnx"
#: ONNX opset: 17 is supported by every onnxruntime from 1.13 on, which keeps old workers working.
ONNX_OPSET = 17
#: A bottleneck wider than this share of the input learns the identity and detects nothing.
MAX_BOTTLENECK_SHARE = 0.75
#: Fewer rows than this cannot train even a tiny network meaningfully.
MIN_TRAIN_ROWS = 20


def _session(model_bytes: bytes, n_threads: int) -> ort.InferenceSession:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread by default: workers scale out by partitions, and single-threaded kernels are
    # deterministic, so a replay reproduces live scores bit for bit.
    opts.intra_op_num_threads = n_threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def _export(mlp: Any, n_features: int) -> bytes:
    """``Z -> squared reconstruction error per column`` as one ONNX graph."""
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        mlp, initial_types=[("z", FloatTensorType([None, n_features]))], target_opset=ONNX_OPSET
    )
    g = onx.graph
    recon = g.output[0].name
    # skl2onnx ends an MLPRegressor with Reshape(-1, 1), which is right for one target and
    # flattens a multi-output reconstruction into a column; the tensor before it is (n, d).
    last = g.node[-1]
    if last.op_type == "Reshape" and last.output[0] == recon:
        recon = last.input[0]
        g.node.remove(last)
    g.node.extend(
        [
            helper.make_node("Sub", ["z", recon], ["residual"], name="lw_residual"),
            helper.make_node("Mul", ["residual", "residual"], ["sq_error"], name="lw_square"),
        ]
    )
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("sq_error", TensorProto.FLOAT, [None, n_features]))
    onx.doc_string = "linewatch windowed autoencoder: standardised input z -> squared reconstruction error"
    return onx.SerializeToString()


class WindowAutoencoder(ParamsMixin):
    """Bottleneck MLP autoencoder; score = summed squared reconstruction error (standardised units).

    Parameters
    ----------
    hidden:
        Widths of the encoder's hidden layers (mirrored in the decoder).
    bottleneck:
        Width of the code; ``None`` = a quarter of the input width (at least 1, at most
        :data:`MAX_BOTTLENECK_SHARE` of it).
    activation, alpha, max_iter, learning_rate:
        Passed to ``MLPRegressor``; ``max_iter`` caps training time (epochs of Adam).
    groups:
        Sensor name of each input column, for :meth:`explain_groups`; ``None`` = one group per column.
    n_threads:
        onnxruntime intra-op threads.
    seed:
        Seeds weight initialisation and batch shuffling: a refit gives identical scores.
    """

    name: ClassVar[str] = "autoencoder"
    fitted_arrays = ("center_", "scale_")

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (32,),
        bottleneck: int | None = None,
        activation: str = "tanh",
        alpha: float = 1e-4,
        max_iter: int = 200,
        learning_rate: float = 1e-3,
        groups: tuple[str, ...] | None = None,
        n_threads: int = 1,
        seed: int = 0,
    ) -> None:
        self.hidden = tuple(hidden)
        self.bottleneck = bottleneck
        self.activation = activation
        self.alpha = alpha
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.groups = None if groups is None else tuple(groups)
        self.n_threads = n_threads
        self.seed = seed
        self.center_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.onnx_: bytes | None = None
        self.mlp_: Any = None  # the scikit-learn network; only kept in memory after fit (parity checks)
        self._session: ort.InferenceSession | None = None

    def _layers(self, d: int) -> tuple[int, ...]:
        code = self.bottleneck if self.bottleneck is not None else max(1, d // 4)
        if code < 1 or code > max(1, int(MAX_BOTTLENECK_SHARE * d)):
            raise ConfigError(
                f"bottleneck={code} for {d} input columns would learn the identity; use at most "
                f"{max(1, int(MAX_BOTTLENECK_SHARE * d))}"
            )
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden={self.hidden!r}: every layer needs at least one unit")
        return (*self.hidden, code, *reversed(self.hidden))

    def group_names(self) -> tuple[str, ...]:
        """Distinct group names in first-appearance order (the columns of :meth:`explain_groups`)."""
        check_fitted(self, "center_")
        labels = self.groups if self.groups is not None else tuple(str(i) for i in range(self.center_.size))
        return tuple(dict.fromkeys(labels))

    def fit(self, X: np.ndarray) -> Self:
        """Train on normal rows ``(n, d)``, then export to ONNX; all later scoring uses the export."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        X = as_batch(X)
        n, d = X.shape
        if n < MIN_TRAIN_ROWS:
            raise DataError(f"the autoencoder needs at least {MIN_TRAIN_ROWS} normal rows (got {n})")
        if self.groups is not None and len(self.groups) != d:
            raise ConfigError(
                f"groups names {len(self.groups)} columns but X has {d}; give one sensor name per column"
            )
        layers = self._layers(d)
        center, scale = robust_scale(X)
        Z = ((X - center) / scale).astype(np.float32)
        mlp = MLPRegressor(
            hidden_layer_sizes=layers,
            activation=self.activation,
            alpha=self.alpha,
            max_iter=self.max_iter,
            learning_rate_init=self.learning_rate,
            batch_size=min(200, n),
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            # Hitting max_iter is the intended time cap, not a problem worth a warning per fit.
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp.fit(Z, Z)
        self.center_, self.scale_, self.mlp_ = center, scale, mlp
        self.onnx_ = _export(mlp, d)
        self._session = _session(self.onnx_, self.n_threads)
        return self

    def _sq_error(self, X: np.ndarray) -> np.ndarray:
        check_fitted(self, "onnx_")
        X = as_batch(X, n_features=self.center_.size)
        if self._session is None:
            self._session = _session(self.onnx_, self.n_threads)
        Z = ((X - self.center_) / self.scale_).astype(np.float32)
        return self._session.run(None, {"z": Z})[0].astype(np.float64)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Summed squared reconstruction error per row, ``(n,)``; high = anomalous."""
        return self._sq_error(X).sum(axis=1)

    def explain(self, X: np.ndarray) -> np.ndarray:
        """Squared reconstruction error per column, ``(n, d)``; rows sum to :meth:`score`."""
        return self._sq_error(X)

    def explain_groups(self, X: np.ndarray) -> np.ndarray:
        """Reconstruction error summed per sensor group, ``(n, n_groups)`` in :meth:`group_names` order."""
        err = self._sq_error(X)
        names = self.group_names()
        labels = self.groups if self.groups is not None else tuple(str(i) for i in range(err.shape[1]))
        member = np.array([[lab == g for lab in labels] for g in names], dtype=np.float64)  # (G, d)
        return rowwise_matmul(err, member.T)

    def worst_group(self, X: np.ndarray) -> list[str]:
        """The sensor (group) with the largest reconstruction error, per row."""
        names = self.group_names()
        return [names[i] for i in np.argmax(self.explain_groups(X), axis=1)]

    def save(self, path: str | Path) -> None:
        """Parameters and the input standardisation as usual; the network as ``model.onnx`` beside them."""
        check_fitted(self, "onnx_")
        super().save(path)
        (Path(path) / MODEL_FILE).write_bytes(self.onnx_)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        det = super().load(path)
        det.onnx_ = (Path(path) / MODEL_FILE).read_bytes()
        return det
