"""Converting reference-code (EdgeML) RNNPool weights: malformed checkpoints."""

import pytest
import torch

from rnnpool.nn import convert_reference_state_dict

from .test_fastgrnn import _reference_layout_state_dict


@pytest.mark.parametrize("key", ["cell_rnn.cell.zeta", "cell_bidirrnn.cell.nu"])
def test_zeta_nu_holding_more_than_one_number_are_named(key):
    # Was "shape '[]' is invalid for input of size 2", naming no key.
    sd = _reference_layout_state_dict(3, 4, 5)
    sd["rnn_model." + key] = torch.zeros(1, 2)
    with pytest.raises(ValueError, match=f"rnn_model.{key} .* one number"):
        convert_reference_state_dict(sd, "rnn_model.")


def test_bias_of_the_wrong_shape_is_named():
    # A (2, 4) bias was flattened into 8 biases without a word.
    sd = _reference_layout_state_dict(3, 4, 5)
    sd["rnn_model.cell_rnn.cell.bias_gate"] = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"rnn_model.cell_rnn.cell.bias_gate .*\(2, 4\)"):
        convert_reference_state_dict(sd, "rnn_model.")
    sd["rnn_model.cell_rnn.cell.bias_gate"] = torch.zeros(4)  # (hidden,) is fine too
    assert convert_reference_state_dict(sd, "rnn_model.")["rnn1.bias_gate"].shape == (4,)
