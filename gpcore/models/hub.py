"""The authors' released models on the Hugging Face Hub, by name: ``hf://owner/name[@revision]``.

>>> from gpcore.models import from_hub
>>> model = from_hub("soumickmj/GPUNet_BraTS2020_T1T2T1ceFlair_Axial").eval()
>>> logits, heatmap = model.forward_with_heatmap(x)
>>> # x (B, 4, H, W) float32: T1, T2, T1CE, FLAIR, each slice divided by its maximum
>>> # logits (B, 3): Healthy, LGG, HGG; heatmap (B, 3, H, W)

``gpcore predict`` and ``gpcore segment`` take the same URIs as ``--checkpoint``; both resolve it
with :func:`resolve_checkpoint`. Files come through ``huggingface_hub.hf_hub_download``, so its
cache and settings apply: ``HF_HOME`` / ``HF_HUB_CACHE`` (where), ``HF_HUB_OFFLINE=1`` (the cache
only, no network), ``HF_ENDPOINT`` (a mirror). A revision (branch, tag or commit) pins the
weights; results record the commit that was used (``hf://owner/name@<commit>``).

Only two files are fetched: the weights (``model.safetensors``, else ``pytorch_model.bin``, read by
:func:`~gpcore.models.checkpoints.read_state_dict`, which never unpickles code) and
``config.json`` (plain JSON). The repositories' custom modelling code (``trust_remote_code``) is
never downloaded or run. The architecture is read off the weights' keys and shapes and checked
against the repository name; classes, channel order, normalisation and input size are the
published ones (``docs/spec/gp-models.md`` §1, §9).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from torch import nn

from .checkpoints import CheckpointError, read_checkpoint_meta, read_state_dict
from .reference import infer_model_config

HUB_PREFIX = "hf://"
#: tried in this order; the first present is used
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PUBLISHED_REPOS = tuple(f"soumickmj/{arch}_BraTS2020{contrasts}_Axial"
                        for contrasts in ("_T1T2T1ceFlair", "T1ce")
                        for arch in ("GPUNet", "GPReconResNet", "GPShuffleUNet"))
PUBLISHED_CLASSES = ("Healthy", "LGG", "HGG")
PUBLISHED_INPUT_SIZE = 240  # axial BraTS 2020 slices
_NAME = re.compile(r"(GPUNet|GPReconResNet|GPShuffleUNet)_BraTS2020_?(T1T2T1ceFlair|T1ce)_Axial",
                   re.IGNORECASE)
_ARCH = {"gpunet": "gp_unet", "gpreconresnet": "gp_recon_resnet",
         "gpshuffleunet": "gp_shuffle_unet"}
_CONTRASTS = {"t1t2t1ceflair": ("t1", "t2", "t1ce", "flair"), "t1ce": ("t1ce",)}
_URI = re.compile(r"hf://(?:models/)?(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w.-]+))?"
                  r"(?:/(?P<file>[\w./-]+))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def is_hub_uri(checkpoint) -> bool:
    return isinstance(checkpoint, str) and checkpoint.startswith(HUB_PREFIX)


def parse_hub_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``"hf://owner/name@rev/file"`` -> ``("owner/name", "rev", "file")``; missing parts
    ``None``."""
    m = _URI.fullmatch(uri)
    if not m or ".." in m["repo"]:
        raise CheckpointError(f"{uri}: not a Hub model URI; write hf://owner/name, "
                              f"hf://owner/name@revision or hf://owner/name@revision/file")
    return m["repo"], m["rev"], m["file"]


def published_model(repo_id: str) -> tuple[str, tuple[str, ...]] | None:
    """``(model name, contrasts in channel order)`` that a repository named like the authors'
    (``GPUNet_BraTS2020_T1T2T1ceFlair_Axial``, ``GPShuffleUNet_BraTS2020T1ce_Axial``, ...)
    holds; ``None`` for other names."""
    m = _NAME.fullmatch(repo_id.split("/")[-1])
    return (_ARCH[m[1].lower()], _CONTRASTS[m[2].lower()]) if m else None


def _download(repo_id: str, files: tuple[str, ...], revision: str | None, uri: str,
              optional: bool = False) -> Path | None:
    """The first of ``files`` in the repository, from the cache or the Hub (one-line errors);
    ``optional``: ``None`` instead of an error when none of them can be had."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError as err:
        raise CheckpointError(f"{uri}: Hub models need huggingface_hub; "
                              f"pip install huggingface_hub") from err
    not_cached = None
    for name in files:
        try:
            return Path(hf_hub_download(repo_id, name, revision=revision))
        except RepositoryNotFoundError as err:
            raise CheckpointError(f"{uri}: no model repository {repo_id!r} on the Hub (or it is "
                                  f"private); check the name, e.g. {PUBLISHED_REPOS[0]}") from err
        except RevisionNotFoundError as err:
            raise CheckpointError(f"{uri}: repository {repo_id!r} has no revision {revision!r}; "
                                  f"give one of its branches, tags or commits") from err
        except LocalEntryNotFoundError as err:  # offline, or the Hub unreachable, and not cached
            not_cached = err
        except EntryNotFoundError:  # the repository has no such file: try the next name
            pass
        except ValueError as err:  # e.g. huggingface_hub's repo id / file name validation
            raise CheckpointError(f"{uri}: {str(err).strip().splitlines()[0]}") from err
        except OSError as err:  # other HTTP errors (HfHubHTTPError is an OSError)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{uri}: download from the Hub failed ({first})") from err
    if optional:
        return None
    if not_cached is not None:
        raise CheckpointError(
            f"{uri}: not in the Hugging Face cache and the Hub cannot be reached; download it "
            f"once online (without HF_HUB_OFFLINE=1) or check HF_HOME / HF_HUB_CACHE"
        ) from not_cached
    what = f"no file {files[0]!r}" if len(files) == 1 else f"none of {', '.join(files)}"
    raise CheckpointError(f"{uri}: repository {repo_id!r} has {what}; name its weights file: "
                          f"hf://{repo_id}@REVISION/FILE")


def _commit_of(path: Path) -> str | None:
    """The commit hash in a cached file's path (``.../snapshots/<commit>/<file>``)."""
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part == "snapshots" and _COMMIT.fullmatch(parts[i + 1]):
            return parts[i + 1]
    return None


def _hub_meta(uri: str, repo_id: str, revision: str | None, file: str | None, weights: Path,
              config: dict) -> dict:
    """The checkpoint meta (as :func:`~gpcore.models.checkpoints.save_model` writes it) of a Hub
    model: architecture from the weights, published classes / channels / normalisation."""
    state = read_state_dict(weights)
    guess = infer_model_config({k: tuple(v.shape) for k, v in state.items()})
    if guess is None:
        raise CheckpointError(f"{uri}: {weights.name} matches none of gpcore's models "
                              f"(GP-UNet, GP-ShuffleUNet, GP-ReconResNet)")
    name, cfg = guess
    if isinstance(config.get("out_act"), str):  # the only architecture fact the keys lack
        cfg["out_act"] = None if config["out_act"] == "None" else config["out_act"]
    extra = {"normalisation": "max"}
    published = published_model(repo_id)
    if published is not None:
        expected, contrasts = published
        if name != expected:
            raise CheckpointError(f"{uri}: the name says {expected} but {weights.name} holds "
                                  f"{name} weights; check the repository")
        if cfg["in_channels"] != len(contrasts):
            raise CheckpointError(f"{uri}: the name says {len(contrasts)} contrast(s) "
                                  f"({','.join(contrasts)}) but the weights take "
                                  f"{cfg['in_channels']} channels; check the repository")
        extra.update(channels=list(contrasts), input_size=PUBLISHED_INPUT_SIZE)
    if cfg["n_classes"] == len(PUBLISHED_CLASSES):
        extra["classes"] = list(PUBLISHED_CLASSES)
    commit = _commit_of(weights)
    label = f"{HUB_PREFIX}{repo_id}@{commit or revision or 'main'}" + (f"/{file}" if file else "")
    return {"model": name, "config": cfg, "extra": extra,
            "hub": {"uri": label, "repo_id": repo_id, "revision": revision, "commit": commit,
                    "file": file or weights.name, "path": str(weights), "config_json": config}}


def resolve_checkpoint(checkpoint: str | os.PathLike) -> tuple[Path, dict]:
    """``(local weights file, meta)`` of a checkpoint path or a Hub URI.

    A path is returned as is, with the JSON that ``save_model`` wrote beside it (``{}`` if
    none). ``hf://owner/name[@revision][/file]`` is downloaded (or read from the cache) and its
    meta has ``"model"``, ``"config"`` (for ``create_model``), ``"extra"`` (``classes``,
    ``channels``, ``normalisation``, ``input_size`` as published) and ``"hub"`` (``uri`` with the
    commit used, ``repo_id``, ``revision``, ``commit``, ``file``, ``path``, ``config_json``).
    """
    if not is_hub_uri(checkpoint):
        return Path(checkpoint), read_checkpoint_meta(checkpoint)
    repo_id, revision, file = parse_hub_uri(checkpoint)
    weights = _download(repo_id, (file,) if file else WEIGHT_FILES, revision, checkpoint)
    # the same commit as the weights, even if the branch moved since
    config_file = _download(repo_id, ("config.json",), _commit_of(weights) or revision,
                            checkpoint, optional=True)
    config = {}
    if config_file is not None:
        try:
            config = json.loads(config_file.read_text())
        except ValueError as err:
            raise CheckpointError(f"{checkpoint}: its config.json is not valid JSON "
                                  f"({err})") from err
    return weights, _hub_meta(checkpoint, repo_id, revision, file, weights,
                              config if isinstance(config, dict) else {})


def load_model(checkpoint: str | os.PathLike) -> tuple[nn.Module, dict]:
    """``(model, meta)`` of a checkpoint path or Hub URI (:func:`resolve_checkpoint`)."""
    from . import create_model

    path, meta = resolve_checkpoint(checkpoint)
    if "hub" in meta:
        return create_model(meta["model"], checkpoint=path, **meta["config"]), meta
    return create_model(checkpoint=path), meta


def checkpoint_source(checkpoint: str | os.PathLike, meta: dict) -> str:
    """What results record as their checkpoint: the Hub URI with its commit, or the file's
    absolute path."""
    return meta["hub"]["uri"] if "hub" in meta else str(Path(checkpoint).resolve())


def from_hub(repo_id: str, revision: str | None = None) -> nn.Module:
    """A released model with its weights, e.g. ``from_hub("soumickmj/GPUNet_BraTS2020T1ce_Axial")``.

    ``repo_id``: ``"owner/name"`` or an ``hf://`` URI; ``revision``: branch, tag or commit
    (default: the URI's, else ``main``). Returns the model in train mode, as ``create_model``
    does; ``model.eval().forward_with_heatmap(x)`` gives ``(logits (B, K), heatmap (B, K, H,
    W))``. For classes, channel order and normalisation see :func:`resolve_checkpoint`.
    """
    uri = repo_id if is_hub_uri(repo_id) else HUB_PREFIX + repo_id
    if revision is not None:
        repo, _, file = parse_hub_uri(uri)
        uri = f"{HUB_PREFIX}{repo}@{revision}" + (f"/{file}" if file else "")
    return load_model(uri)[0]
