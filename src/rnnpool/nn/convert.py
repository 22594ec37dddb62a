"""Load RNNPool weights trained with the reference (EdgeML) code.

The reference ``RNNPool`` module holds two ``FastGRNN`` wrappers, ``cell_rnn`` (RNN1) and
``cell_bidirrnn`` (RNN2), each around a ``FastGRNNCell`` stored as ``.cell``. Its parameters use
the row-vector convention ``x @ W``:

=================  =============================  ==================================
reference key      reference shape                ours
=================  =============================  ==================================
``W``              ``(input, hidden)``            ``weight_ih = W.T``
``W1``, ``W2``     ``(input, r)``, ``(r, hidden)``  ``weight_ih1 = W2.T``, ``weight_ih2 = W1.T``
``U``              ``(hidden, hidden)``           ``weight_hh = U.T``
``U1``, ``U2``     as ``W1``, ``W2``              ``weight_hh1 = U2.T``, ``weight_hh2 = U1.T``
``bias_gate``      ``(1, hidden)``                ``bias_gate`` ``(hidden,)``
``bias_update``    ``(1, hidden)``                ``bias_update`` ``(hidden,)``
``zeta``, ``nu``   ``(1, 1)`` raw                 ``zeta_raw``, ``nu_raw`` (sigmoid applied)
=================  =============================  ==================================

Build the :class:`~rnnpool.nn.RNNPool2d` with ``trainable_zeta_nu=True`` to keep the learnt
``zeta``/``nu``; a module with the paper's fixed ``zeta = 1, nu = 0`` accepts the weights only
when the reference's ``sigmoid(zeta), sigmoid(nu)`` are within 1e-6 of 1 and 0.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

__all__ = ["convert_reference_state_dict", "load_reference_state_dict"]

_REF_CELLS = (("rnn1", "cell_rnn"), ("rnn2", "cell_bidirrnn"))


def _find_cell_prefix(sd: Mapping[str, Tensor], prefix: str, name: str) -> str:
    for cand in (f"{prefix}{name}.cell.", f"{prefix}{name}."):
        if any(k.startswith(cand) for k in sd):
            return cand
    raise KeyError(
        f"reference state dict has no parameters under '{prefix}{name}.cell.' "
        f"(keys look like: {sorted(sd)[:6]})"
    )


def convert_reference_state_dict(
    ref: Mapping[str, Tensor], prefix: str = "", trainable_zeta_nu: bool = True
) -> dict[str, Tensor]:
    """Translate a reference RNNPool state dict into :class:`~rnnpool.nn.RNNPool2d` keys.

    Args:
        ref: the reference module's ``state_dict()`` (or a whole model's).
        prefix: where the RNNPool module sits in ``ref``, e.g. ``"rnn_model."``.
        trainable_zeta_nu: emit ``zeta_raw`` / ``nu_raw`` (else check they are 1 and 0).

    Returns:
        A state dict for ``RNNPool2d`` (keys ``rnn1.*``, ``rnn2.*``).
    """
    out: dict[str, Tensor] = {}
    for ours, theirs in _REF_CELLS:
        p = _find_cell_prefix(ref, prefix, theirs)
        for m in ("W", "U"):
            base = "weight_ih" if m == "W" else "weight_hh"
            if p + m in ref:
                out[f"{ours}.{base}"] = ref[p + m].t().contiguous()
            elif p + m + "1" in ref and p + m + "2" in ref:
                out[f"{ours}.{base}1"] = ref[p + m + "2"].t().contiguous()
                out[f"{ours}.{base}2"] = ref[p + m + "1"].t().contiguous()
            else:
                raise KeyError(f"reference state dict lacks '{p}{m}' (or '{p}{m}1'/'{p}{m}2')")
        for b in ("bias_gate", "bias_update"):
            if p + b not in ref:
                raise KeyError(f"reference state dict lacks '{p}{b}'")
            bias = ref[p + b]
            if bias.dim() not in (1, 2) or (bias.dim() == 2 and bias.shape[0] != 1):
                raise ValueError(f"reference {p}{b} must be (1, hidden) or (hidden,), got "
                                 f"{tuple(bias.shape)}")
            out[f"{ours}.{b}"] = bias.reshape(-1).clone()
        for s in ("zeta", "nu"):
            raw = ref.get(p + s)
            if raw is None:
                continue
            if raw.numel() != 1:
                raise ValueError(f"reference {p}{s} must hold one number, got shape "
                                 f"{tuple(raw.shape)}")
            raw = raw.reshape(())
            if trainable_zeta_nu:
                out[f"{ours}.{s}_raw"] = raw.clone()
            else:
                want = 1.0 if s == "zeta" else 0.0
                got = float(torch.sigmoid(raw.double()))
                if abs(got - want) > 1e-6:
                    raise ValueError(
                        f"reference {p}{s} gives sigmoid = {got:.6g}, not the fixed {want}: "
                        "build the RNNPool2d with trainable_zeta_nu=True"
                    )
    return out


def load_reference_state_dict(
    module: torch.nn.Module, ref: Mapping[str, Tensor], prefix: str = ""
) -> None:
    """Load reference-code weights into an :class:`~rnnpool.nn.RNNPool2d` (strict)."""
    sd = convert_reference_state_dict(
        ref, prefix, trainable_zeta_nu=bool(getattr(module.rnn1, "trainable_zeta_nu", False))
    )
    module.load_state_dict(sd, strict=True)
