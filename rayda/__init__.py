"""rayda: Deliberative Alignment on Ray. Importing this package starts nothing and imports no engine."""

from pathlib import Path

__version__ = "0.1.0"

# A source checkout keeps the actor shells in its top-level `actors/` folder; a wheel installs them as
# rayda/actors. Let `rayda.actors` resolve inside the checkout this package was imported from, so that a
# checkout shipped as a Ray job's working_dir runs its own actor shells, not another copy's found
# through an (editable) install: mixing the two failed the Jobs API run.
_package = Path(__file__).resolve().parent
if not (_package / "actors").is_dir() and (_package.parent / "actors" / "__init__.py").is_file():
    __path__.append(str(_package.parent))  # noqa: F821 - a package's __path__

INSTALLED_AS = {"specs": "specs", "cluster": "cluster_files"}
"""Top-level folders of the source checkout that a wheel installs inside the package, and their names
there (pyproject.toml's package-dir): specs/ -> rayda/specs, cluster/ -> rayda/cluster_files."""


def shipped_path(path: str) -> Path:
    """A file or folder shipped with rayda, named by its path in the source checkout ("specs",
    "cluster/runtime_env.yaml"): inside the package when rayda is installed from a wheel, else beside
    the package (a source checkout or an editable install)."""
    top, _, rest = path.partition("/")
    package = Path(__file__).resolve().parent
    installed = package / INSTALLED_AS[top]
    return installed / rest if installed.is_dir() else package.parent / path
