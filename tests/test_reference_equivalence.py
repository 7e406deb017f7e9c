"""The published state_dict layouts and the reference's numeric test vectors."""
import pytest
import torch

from gpcore.models import create_model, from_reference_kwargs
from gpcore.models.profile import count_parameters
from gpcore.models.reference import parse_reference_call, read_state_dict_listing
from gpcore.models.test_vectors import check_vector

LISTINGS = ["GP_UNet", "GP_ShuffleUNet", "GP_ReconResNet"]
VECTORS = ["GP_UNet_sinc", "GP_UNet_upconv", "GP_ReconResNet_sinc", "GP_ReconResNet_upconv",
           "GP_ShuffleUNet"]
PAPER_PARAMS = {"gp_unet": 1_740_675, "gp_shuffle_unet": 26_371_587,
                "gp_recon_resnet": 17_272_918}


@pytest.mark.parametrize("listing", LISTINGS)
def test_state_dict_equals_published_listing(shared_dir, listing):
    call, want = read_state_dict_listing(shared_dir / "reference/state_dicts" / f"{listing}.txt")
    name, cfg = from_reference_kwargs(*parse_reference_call(call))
    with torch.device("meta"):
        model = create_model(name, **cfg)
    got = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
           for k, v in model.state_dict().items()}
    assert got == want
    assert list(got) == list(want)  # same order too, as state_dict() lists them


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_paper_defaults_and_parameter_counts(name):
    with torch.device("meta"):
        model = create_model(name)
    assert count_parameters(model) == PAPER_PARAMS[name]
    assert model.in_channels == 4 and model.head.out_channels == 3


@pytest.mark.parametrize("vector", VECTORS)
def test_reproduces_reference_test_vector(shared_dir, vector):
    err = check_vector(shared_dir / "reference/vectors" / f"{vector}.json")
    assert err["logits_rel_err"] <= 1e-4
    assert err["heatmap_rel_err"] <= 1e-4


def test_defaults_match_paper_listing_calls(shared_dir):
    # create_model(name) with no options is the paper configuration of each listing
    for listing in LISTINGS:
        call, _ = read_state_dict_listing(shared_dir / "reference/state_dicts" / f"{listing}.txt")
        name, cfg = from_reference_kwargs(*parse_reference_call(call))
        default = create_model(name).config
        assert {k: default[k] for k in cfg} == cfg, listing
