"""Find a model folder (a local path, or a Hub id in the local Hugging Face cache), read its JSON files, and the
one error type for bad input that every file of siglip-min raises.

Shared by siglip_min.py, tokenizer.py, preprocess.py and the tools, so it imports neither torch nor anything
outside the standard library. The cache layout is huggingface_hub's:

    $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
        models--ORG--NAME/refs/main              text file holding a revision hash
        models--ORG--NAME/snapshots/<rev>/...    the files of that revision

Only when the id is in neither place, and huggingface_hub is installed, is it downloaded.
"""
import json
import os
from pathlib import Path


class InputError(ValueError):
    """Bad input from the user: a file, a key, a shape, a value. The tools print it as one line and exit 2;
    anything else that goes wrong is a bug and keeps its traceback."""


def read_json(path):
    """The JSON object in the file at path; InputError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no {path.name} in the folder")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object, got a {type(value).__name__}")
    return value


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def check_not_lfs_pointer(path):
    """Refuse a git-lfs pointer file in place of the real one (a clone made without git-lfs), naming it."""
    with open(path, "rb") as f:
        if f.read(len(LFS_POINTER)) == LFS_POINTER:
            raise InputError(f"{path}: a git-lfs pointer, not the file itself; fetch it with `git lfs pull` "
                             f"(or download the file)")


def hub_cache_dir():
    """The folder huggingface_hub caches models in, following its environment variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def cached_snapshot(repo_id, cache_dir=None):
    """The snapshot folder of `repo_id` in the cache (refs/main's revision first), or None."""
    repo_dir = Path(cache_dir or hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        main = snapshots / ref.read_text().strip()
        if main.is_dir():
            return main
    revisions = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return revisions[-1] if revisions else None


def looks_like_repo_id(name):
    """'org/name' or 'name' with no path separators beyond the one slash, and not an existing path."""
    parts = str(name).split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not str(name).startswith((".", "~"))


def resolve_model_dir(path_or_repo_id):
    """A local folder for `path_or_repo_id`; raises FileNotFoundError saying where it looked."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path_or_repo_id}: expected a model folder, found a file")
    if not looks_like_repo_id(path_or_repo_id):
        raise FileNotFoundError(f"model folder not found: {path_or_repo_id}")
    snapshot = cached_snapshot(str(path_or_repo_id))
    if snapshot is not None:
        return snapshot
    downloaded = try_download(str(path_or_repo_id))
    if downloaded is not None:
        return downloaded
    raise FileNotFoundError(
        f"{path_or_repo_id}: no such folder, and not in the Hugging Face cache "
        f"({hub_cache_dir() / ('models--' + str(path_or_repo_id).replace('/', '--'))}). "
        f"Get the weights with `hf download {path_or_repo_id}` on a machine with network "
        f"access (or copy the folder here and pass its path)."
    )


def try_download(repo_id):
    """Download through huggingface_hub when it is installed and not offline; None when it cannot be tried.

    A download that was tried and failed says why: a gated repository, one that does not exist (or is private),
    or no network. huggingface_hub's errors are OSErrors; the first two are checked first, as they are also that.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    try:
        from huggingface_hub import errors, snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model"]))
    except errors.GatedRepoError:
        raise InputError(f"{repo_id}: a gated repository on the Hub; accept its terms on its page, then log in "
                         f"(`hf auth login`) and try again") from None
    except errors.RepositoryNotFoundError:
        raise InputError(f"{repo_id}: no such repository on the Hub, or a private one and you are not logged in "
                         f"(`hf auth login`)") from None
    except OSError as e:
        reason = " ".join(str(e).split())[:200]
        raise InputError(f"{repo_id}: not in the Hugging Face cache ({hub_cache_dir()}), and the download failed, "
                         f"no network? ({reason}). Set HF_HUB_OFFLINE=1 to look in the cache only.") from None
