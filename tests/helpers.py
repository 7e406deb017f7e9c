"""Small-width model configurations that keep the parametrised grids fast."""
from gpcore.models import create_model

SMALL = {
    "gp_unet": {"wf": 3},
    "gp_shuffle_unet": {"num_features": 4},
    "gp_recon_resnet": {"starting_nfeatures": 4, "res_blocks": 2},
}
# every up-sampling variant of the study: (model, extra options)
VARIANTS = [("gp_unet", {"up_mode": "sinc"}), ("gp_unet", {"up_mode": "upconv"}),
            ("gp_unet", {"up_mode": "bilinear"}), ("gp_shuffle_unet", {}),
            ("gp_recon_resnet", {"up_mode": "sinc"}), ("gp_recon_resnet", {"up_mode": "upconv"})]


def small_model(name, **cfg):
    return create_model(name, **{**SMALL[name], **cfg})


def variant_id(v):
    return v[0] + "".join(f"-{x}" for x in v[1].values())
