"""Download the Shopee competition data from Kaggle and unpack it into the expected layout."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

COMPETITION = "shopee-product-matching"
LAYOUT = ("train.csv", "test.csv", "train_images", "test_images")


class KaggleCredentialsError(RuntimeError):
    """No Kaggle API credentials were found; the message says where to put them."""


def kaggle_config_dir() -> Path:
    """Where the kaggle package looks for ``kaggle.json`` / ``access_token``."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if legacy.exists():
        return legacy
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "kaggle"


def has_kaggle_credentials() -> bool:
    """True if any credential form the kaggle package accepts is present."""
    env = os.environ
    folder = kaggle_config_dir()
    return bool(
        env.get("KAGGLE_API_TOKEN")
        or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"))
        or (folder / "kaggle.json").is_file()
        or (folder / "access_token").is_file()
    )


def download_shopee(dest: str | Path, force: bool = False) -> Path:
    """Download and unpack the competition data into ``dest``; a second call does nothing.

    You must have joined the competition on kaggle.com and have API credentials.
    """
    dest = Path(dest)
    if not force and is_unpacked(dest):
        return dest
    if not has_kaggle_credentials():
        raise KaggleCredentialsError(_credentials_help())
    _check_token_file()
    dest.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()) as chatter:
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
            api.competition_download_files(COMPETITION, path=str(dest), force=force, quiet=True)
        except SystemExit as exit_:  # the kaggle package exits instead of raising
            raise KaggleCredentialsError(
                f"{_credentials_help()}\nKaggle said: {chatter.getvalue().strip()[:500]}"
            ) from exit_
    return unpack_shopee(dest / f"{COMPETITION}.zip", dest)


def _check_token_file() -> None:
    """A ``kaggle.json`` that the kaggle package would use but cannot read is named, with what
    is wrong, instead of being reported as no credentials at all."""
    env = os.environ
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return  # the environment's credentials come first
    path = kaggle_config_dir() / "kaggle.json"
    if not path.is_file():
        return
    try:
        token = json.loads(path.read_text(encoding="utf-8"))
        problem = "" if isinstance(token, dict) else f"it holds a {type(token).__name__}"
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        token, problem = {}, f"it is not valid JSON ({err})"
    if not problem:
        absent = [k for k in ("username", "key") if not str(token.get(k) or "").strip()]
        problem = f"it has no {' or '.join(absent)}" if absent else ""
    if problem:
        raise KaggleCredentialsError(
            f"{path} cannot be used: {problem}. It should read "
            '{"username": "...", "key": "..."}: create a new token at '
            "https://www.kaggle.com/settings (API section) and save it there.")


def is_unpacked(dest: str | Path) -> bool:
    """True when ``dest`` holds the complete layout written by :func:`unpack_shopee`."""
    return (Path(dest) / ".unpacked.json").is_file() and all(
        (Path(dest) / name).exists() for name in LAYOUT)


def unpack_shopee(archive: str | Path, dest: str | Path) -> Path:
    """Unzip a competition archive into ``dest`` and check the Shopee layout; idempotent.

    A marker records which archive (name and size) was unpacked, so running it
    again with the same archive does nothing and a different one re-unpacks.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"Archive {archive} not found.")
    marker = dest / ".unpacked.json"
    stamp = {"archive": archive.name, "bytes": archive.stat().st_size}
    if is_unpacked(dest) and json.loads(marker.read_text()) == stamp:
        return dest
    marker.unlink(missing_ok=True)
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        prefix = _common_prefix(names)
        for info in zf.infolist():
            relative = info.filename[len(prefix):]
            if not relative or info.is_dir():
                continue
            target = (dest / relative).resolve()
            if dest.resolve() not in target.parents:
                raise ValueError(f"{archive}: entry {info.filename!r} points outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    missing = [name for name in LAYOUT if not (dest / name).exists()]
    if missing:
        raise ValueError(
            f"{archive} unpacked into {dest} but {missing} are missing; expected the Shopee "
            f"layout {list(LAYOUT)}. Is it the {COMPETITION} archive?"
        )
    marker.write_text(json.dumps(stamp))
    return dest


def _common_prefix(names: list[str]) -> str:
    """``"shopee/"`` when every entry sits in one top folder, else ``""``."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return tops.pop() + "/"
    return ""


def _credentials_help() -> str:
    folder = kaggle_config_dir()
    return (
        "No Kaggle API credentials found. Create a token at https://www.kaggle.com/settings "
        f"(API section) and either save kaggle.json to {folder / 'kaggle.json'} (chmod 600), "
        "or set KAGGLE_USERNAME and KAGGLE_KEY, or set KAGGLE_API_TOKEN. Also accept the "
        f"rules of the {COMPETITION} competition on kaggle.com before downloading."
    )
