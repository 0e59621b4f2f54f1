"""The codegen pipeline: scan → compare with the manifest → introspect → generate → record."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from snakebridge import paths
from snakebridge.codegen.generator import header
from snakebridge.codegen.layout import AIO, render_package
from snakebridge.codegen.manifest import CodegenError, Manifest, atomic_write, content_hash
from snakebridge.codegen.scanner import ScanResult, Use, scan_paths
from snakebridge.config import LibrarySpec, Settings
from snakebridge.envs.lock import Lock, generator_hash
from snakebridge.runtime.interpreters import interpreter_for

__all__ = ["Project", "SyncReport"]

INTROSPECT = Path(__file__).with_name("introspect.py")
# Isolated like ``-I`` (no PYTHON* variables, no user site; the script drops its own directory
# from sys.path), but with a fixed hash seed: libraries that format sets into docstrings give
# the same text every run, so facades are byte-identical.
INTROSPECT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
INTROSPECT_ENV["PYTHONHASHSEED"] = "0"
TIERS = ("runtime", "text_signature", "stub", "docstring", "variadic")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _excluded(dotted: str, exclude: list[str]) -> bool:
    return any(dotted == name or dotted.startswith(name + ".") for name in exclude)


def _typeshed() -> Path:
    """typeshed's stdlib stubs as shipped with snakebridge (the typeshed_client package)."""
    import typeshed_client

    return Path(typeshed_client.__file__).with_name("typeshed")


def _config_key(spec: LibrarySpec) -> dict[str, Any]:
    """The library options that change what is generated (a change re-introspects it)."""
    keys = ("generate", "depth", "include", "exclude", "streaming", "min_signature_tier")
    options: dict[str, Any] = {k: getattr(spec, k) for k in keys}
    options["module"], options["package"] = spec.module, spec.package
    return options


def _drop_excluded(entry: dict[str, Any], exclude: list[str]) -> None:
    for path in [p for p in entry["symbols"] if _excluded(p, exclude)]:
        del entry["symbols"][path]
    entry["aliases"] = {a: c for a, c in entry.get("aliases", {}).items() if c in entry["symbols"]}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("snakebridge")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    typed: list[str] = field(default_factory=list)  # classes added because results have them
    written: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rerendered: list[str] = field(default_factory=list)  # libraries of an older generator


def interpreter_identity(python: dict[str, Any]) -> str:
    """What a facade depends on of the interpreter it was introspected with: implementation
    and minor version (``cpython 3.11``), not the binary, which differs on every machine, so
    committed facades stay valid wherever `snakebridge setup` builds the same environment."""
    minor = ".".join(str(python.get("version", "")).split(".")[:2])
    return f"{python.get('implementation', '')} {minor}"


def _same_interpreter(python: dict[str, Any]) -> tuple[str, str]:
    """Manifest values that match a locked interpreter (a binary hash: older manifests)."""
    return interpreter_identity(python), str(python.get("sha256", ""))


@dataclass
class Project:
    """One project's codegen state: its settings, generated tree and manifest."""

    settings: Settings

    @property
    def state_dir(self) -> Path:
        return paths.state_dir(self.settings.root)

    @property
    def generated_dir(self) -> Path:
        base = self.settings.root / self.settings.generated_path
        return base.joinpath(*self.settings.generated.split("."))

    def manifest(self) -> Manifest:
        return Manifest.load(self.state_dir / "manifest.json")

    def lock(self) -> filelock.FileLock:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(str(self.state_dir / "sync.lock"), timeout=120)

    def library(self, name: str) -> tuple[LibrarySpec, str]:
        """(spec, module to import) for a library used through the facade package."""
        libraries = self.settings.libraries
        if name == AIO:
            raise CodegenError(
                f"a library cannot be named {AIO!r}: {self.settings.generated}.{AIO} holds the "
                "async facades; give it another key and set `module`"
            )
        if libraries is None:
            return LibrarySpec(), name
        spec = libraries.get(name)
        spelled = [k for k in libraries if k != name and _normal(k) == _normal(name)]
        if spec is None and spelled:
            raise CodegenError(
                f"[tool.snakebridge.libraries] key {spelled[0]!r} must be the import name: "
                f"write {name} = {{ package = {spelled[0]!r}, version = ... }} in "
                f"{self.settings.path}"
            )
        if spec is None:
            raise CodegenError(
                f"library {name!r} is used but not listed in [tool.snakebridge.libraries] of "
                f'{self.settings.path}; add it (e.g. {name} = "stdlib" or a version)'
            )
        return spec, spec.module or name

    # -- scanning -----------------------------------------------------------------------------
    def scan(self) -> ScanResult:
        roots = [self.settings.root / p for p in (self.settings.scan or ("."))]
        result = scan_paths(
            [r for r in roots if r.exists()],
            self.settings.generated.split(".")[0],
            self.settings.root,
            cache_file=self.state_dir / "cache" / "scan.json",
            skip=self.generated_dir,
        )
        helpers = self.settings.helpers  # streams (#14): their facades come from their source
        if helpers:
            result.uses = [
                u
                for u in result.uses
                if not any(f"{u.library}.{u.symbol}.".startswith(h + ".") for h in helpers)
            ]
        return result

    # -- introspection ------------------------------------------------------------------------
    def introspect(
        self,
        library: str,
        symbols: Iterable[str],
        everything: bool = False,
        known: Iterable[str] = (),
        stars: Iterable[str] = (),
        homes: Iterable[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """What the introspector reports for ``symbols`` (or the whole surface), with the
        classes results are typed as; ``homes`` re-describes classes pulled in earlier."""
        spec, module = self.library(library)
        request = {
            "library": library,
            "package": spec.package or library,
            "module": module,
            "symbols": sorted(set(symbols)),
            "all": everything,
            "depth": spec.depth,
            "typeshed": str(_typeshed()),
            "known": sorted(set(known)),
            "star": sorted(set(stars)),
            "types": list(homes),
        }
        interpreter = interpreter_for(self.settings, spec.env)
        done = subprocess.run(
            [interpreter, "-s", str(INTROSPECT)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            cwd="/",
            env=INTROSPECT_ENV,
            timeout=600,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            raise CodegenError(f"introspecting {library} failed with {interpreter}:\n{tail}")
        result: dict[str, Any] = json.loads(done.stdout)
        if "import_error" in result:
            raise CodegenError(f"{library}: {result['import_error']}")
        return result

    # -- generation ---------------------------------------------------------------------------
    def render(self, manifest: Manifest) -> dict[Path, str]:
        """Every generated file's text, by absolute path."""
        version = _version()
        package_doc = (
            f"{header(version, 'snakebridge', version)}"
            f'"""Facades generated by `snakebridge sync`."""\n'
        )
        texts = {
            self.generated_dir / "__init__.py": package_doc,
            self.generated_dir / "py.typed": "",
        }
        scopes = {name: spec.env for name, spec in (self.settings.libraries or {}).items()}
        for relative, text in render_package(
            self.settings.generated, manifest.libraries, version, scopes=scopes
        ).items():
            texts[self.generated_dir.joinpath(*relative.parts)] = text
        return texts

    def generate(self, manifest: Manifest, libraries: Iterable[str] = ()) -> list[str]:
        """Rewrite the facade tree from the manifest (every library: classes are shared
        across modules); paths written."""
        del libraries
        written: list[str] = []
        for path, text in sorted(self.render(manifest).items()):
            relative = str(path.relative_to(self.settings.root))
            if atomic_write(path, text):
                written.append(relative)
            manifest.files[relative] = content_hash(text)
        return written

    # -- commands -----------------------------------------------------------------------------
    def _wanted(self, uses: list[Use]) -> dict[str, dict[str, Use]]:
        wanted: dict[str, dict[str, Use]] = defaultdict(dict)
        for use in uses:
            if use.symbol:
                wanted[use.library].setdefault(use.symbol, use)
            else:
                wanted[use.library]
        return wanted

    def add(
        self,
        manifest: Manifest,
        wanted: dict[str, dict[str, Use | None]],
        report: SyncReport,
        progress: Callable[[str], None] | None = None,
    ) -> set[str]:
        """Introspect what the manifest lacks (all of a library whose config changed) and
        record it; the libraries that changed."""
        changed: set[str] = set()
        for library in sorted(wanted):
            spec, root = self.library(library)
            entry = manifest.libraries.get(library)
            config = _config_key(spec)
            reconfigured = entry is not None and entry.get("config") != config
            requested = {**dict.fromkeys(spec.include), **wanted[library]}
            if reconfigured and entry is not None:
                _drop_excluded(entry, spec.exclude)
                requested = {**dict.fromkeys(entry["symbols"]), **requested}
            stars = sorted({s[:-1].rstrip(".") for s in requested if s.endswith("*")})
            done_stars = set(entry.get("star", [])) if entry and not reconfigured else set()
            stars = [s for s in stars if s not in done_stars]
            missing = {
                s: u
                for s, u in requested.items()
                if not s.endswith("*")
                and (reconfigured or not manifest.covers(library, s))
                and not _excluded(s, spec.exclude)
            }
            everything = spec.generate == "all" and (entry is None or reconfigured)
            if not missing and not stars and not everything and entry is not None:
                continue
            if progress is not None:
                progress(library)
            entry = manifest.libraries.setdefault(
                library, {"resolved": "", "symbols": {}, "aliases": {}}
            )
            known = [
                str(r["info"].get("remote_type"))
                for path, r in entry["symbols"].items()
                if r["info"].get("remote_type") and path not in missing
            ]
            pulled_types = entry.get("types", {})
            homes = [
                {
                    "key": pulled_types[s]["key"],
                    "module": pulled_types[s]["module"],
                    "name": s.rpartition(".")[2],
                }
                for s in sorted(missing)
                if s in pulled_types
            ]
            asked = {s: u for s, u in missing.items() if s not in pulled_types}
            result = self.introspect(library, asked, everything, known, stars, homes)
            entry["resolved"] = result.get("version", "unknown")
            entry["generator"] = generator_hash()
            entry["config"] = config
            if stars or entry.get("star"):
                entry["star"] = sorted(done_stars | set(stars) | set(entry.get("star", [])))
            interpreter = self._locked_interpreter(spec.env)
            if interpreter:
                entry["interpreter"] = interpreter
            changed.add(library)
            for dotted, message in sorted(result.get("errors", {}).items()):
                use = missing.get(dotted)
                where = f"{use.file}:{use.line}: " if use else ""
                report.errors.append(f"{where}{library}.{dotted}: {message}")
            found = sorted(result.get("symbols", {}).items())
            found += sorted((key, info) for key, info in result.get("types", {}).items())
            for dotted, info in found:
                prefix = info["module"][len(root) :].lstrip(".")
                canonical = ".".join(p for p in (prefix, info.get("qualname", "")) if p)
                pulled = bool(info.pop("pulled", False))
                if not canonical or (pulled and canonical in entry["symbols"]):
                    continue
                if _excluded(dotted, spec.exclude) or _excluded(canonical, spec.exclude):
                    continue
                if canonical != dotted and not pulled:
                    entry["aliases"][dotted] = canonical
                tier = str(info.get("tier", "variadic"))
                if TIERS.index(tier) > TIERS.index(spec.min_signature_tier) and not pulled:
                    use = missing.get(dotted)
                    where = f"{use.file}:{use.line}: " if use else ""
                    report.errors.append(
                        f"{where}{library}.{dotted}: only a {tier} signature was found, below "
                        f"min_signature_tier = {spec.min_signature_tier!r}"
                    )
                    continue
                if canonical in spec.streaming or dotted in spec.streaming:
                    info["streaming"] = True
                old = entry["symbols"].get(canonical)
                if old is not None and not reconfigured and canonical not in missing:
                    continue
                use = missing.get(dotted)
                record: dict[str, Any] = {
                    "info": info,
                    "hash": content_hash(info),
                    "first_use": f"{use.file}:{use.line}" if use else "",
                }
                if pulled or (old is not None and old.get("pulled")):
                    record["pulled"] = True
                    home = {"key": info.get("remote_type"), "module": info["module"]}
                    entry.setdefault("types", {})[canonical] = home
                if old is not None:
                    record["first_use"] = old.get("first_use", "") or record["first_use"]
                entry["symbols"][canonical] = record
                if old is None:
                    (report.typed if record.get("pulled") else report.added).append(
                        f"{library}.{canonical}"
                    )
        return changed

    def sync(
        self, progress: Callable[[str], None] | None = None, dry_run: bool = False
    ) -> SyncReport:
        """Generate what the code uses and the config asks for; ``dry_run`` writes nothing
        and reports what would be written (``snakebridge plan``)."""
        report = SyncReport()
        with self.lock():
            scanned = self.scan()
            report.errors += scanned.errors
            manifest = self.manifest()
            wanted: dict[str, dict[str, Use | None]] = {
                lib: dict(symbols) for lib, symbols in self._wanted(scanned.uses).items()
            }
            for library, spec in (self.settings.libraries or {}).items():
                if spec.generate == "all" or library in manifest.libraries:
                    wanted.setdefault(library, {})
            changed = self.add(manifest, wanted, report, progress)
            report.rerendered = self._rerender(manifest)
            changed |= set(report.rerendered)
            if dry_run:
                report.written = self._would_write(manifest)
            elif changed or not (self.generated_dir / "__init__.py").exists():
                report.written = self.generate(manifest, changed)
            if not dry_run:
                manifest.save()
        return report

    def _rerender(self, manifest: Manifest) -> list[str]:
        """Libraries whose facades another generator version rendered, now marked as this
        one's: rendering reads only the manifest, so an upgraded snakebridge rewrites them on
        the next `sync` without importing any library (`regen` also re-introspects)."""
        current = generator_hash()
        stale = [
            library
            for library, entry in sorted(manifest.libraries.items())
            if entry.get("generator", current) != current
        ]
        for library in stale:
            manifest.libraries[library]["generator"] = current
        return stale

    def _would_write(self, manifest: Manifest) -> list[str]:
        out = []
        for path, text in sorted(self.render(manifest).items()):
            try:
                same = path.read_text(encoding="utf-8") == text
            except OSError:
                same = False
            if not same:
                lines = text.count("\n")
                out.append(f"{path.relative_to(self.settings.root)} ({lines} lines)")
        return out

    def check(self) -> list[str]:
        """Problems that make ``snakebridge check`` fail (needs no library installed)."""
        problems: list[str] = []
        scanned = self.scan()
        problems += scanned.errors
        manifest = self.manifest()
        for use in scanned.uses:
            if use.symbol and not manifest.covers(use.library, use.symbol):
                problems.append(
                    f"{use.file}:{use.line}: {use.library}.{use.symbol} is used but "
                    "not generated; run `snakebridge sync`"
                )
            elif not use.symbol and use.library not in manifest.libraries:
                problems.append(
                    f"{use.file}:{use.line}: library {use.library} is used but has no "
                    "facade; run `snakebridge sync`"
                )
            elif use.symbol and not use.symbol.endswith("*"):
                problems += self._diverging(manifest, use)
        problems += self._stale_libraries(manifest)
        for library, entry in sorted(manifest.libraries.items()):
            spec = (self.settings.libraries or {}).get(library)
            if spec is not None and "config" in entry and entry["config"] != _config_key(spec):
                problems.append(
                    f"{library}: its [tool.snakebridge.libraries] options changed since the "
                    "facades were generated; run `snakebridge sync`"
                )
        for relative, digest in sorted(manifest.files.items()):
            path = self.settings.root / relative
            if not path.exists():
                problems.append(f"{relative}: generated file is missing; run `snakebridge regen`")
            elif content_hash(path.read_bytes()) != digest:
                problems.append(
                    f"{relative}: differs from what the manifest records (edited by "
                    "hand or stale); run `snakebridge regen`"
                )
        return problems

    def _diverging(self, manifest: Manifest, use: Use) -> list[str]:
        """A use the facade would serve differently from the dynamic path it replaces: an
        attribute of something generated as a host-side function (which has none)."""
        found = manifest.covering(use.library, use.symbol)
        if found is None or not found[1]:
            return []
        path, rest = found
        record = manifest.libraries[use.library]["symbols"].get(path, {})
        if record.get("info", {}).get("kind") not in ("function", "builtin"):
            return []
        return [
            f"{use.file}:{use.line}: {use.library}.{use.symbol}: the facade generates "
            f"{use.library}.{path} as a function, which has no attribute {rest!r} (the library "
            "object has); run `snakebridge regen`"
        ]

    def _locked_interpreter(self, env: str) -> str:
        """The interpreter the lock records for ``env`` as facades depend on it ("" when
        there is none): see :func:`interpreter_identity`."""
        lock = Lock.load(self.settings.root)
        entry = lock.envs.get(env) if lock is not None else None
        return interpreter_identity(entry["python"]) if entry else ""

    def _stale_libraries(self, manifest: Manifest) -> list[str]:
        """Libraries whose facades were generated by another generator or library version."""
        problems = []
        lock = Lock.load(self.settings.root)
        current = generator_hash()
        for library, entry in sorted(manifest.libraries.items()):
            if entry.get("generator", current) != current:
                problems.append(
                    f"{library}: facades come from another version of the generator; "
                    "run `snakebridge sync` (it re-renders them from the manifest)"
                )
            spec = (self.settings.libraries or {}).get(library)
            if lock is None or spec is None or spec.is_stdlib:
                continue
            env = lock.envs.get(spec.env, {})
            made_with = entry.get("interpreter")
            if made_with and env and made_with not in _same_interpreter(env["python"]):
                problems.append(
                    f"{library}: facades were generated with another interpreter than "
                    f"environment {spec.env!r} now has ({made_with}, the lock has "
                    f"{interpreter_identity(env['python'])}); run `snakebridge regen`"
                )
            locked = env.get("packages", {}).get(_normal(spec.package or library))
            if locked and entry.get("resolved") != locked["version"]:
                problems.append(
                    f"{library}: facades were generated against "
                    f"{entry.get('resolved')}, snakebridge.lock holds "
                    f"{locked['version']}; run `snakebridge regen`"
                )
        return problems

    def regen(self, clean: bool) -> SyncReport:
        report = SyncReport()
        with self.lock():
            manifest = self.manifest()
            if clean and self.generated_dir.exists():
                shutil.rmtree(self.generated_dir)
                manifest.files = {}
            wanted: dict[str, dict[str, Use | None]] = {}
            first_uses: dict[tuple[str, str], str] = {}
            pulled: set[tuple[str, str]] = set()
            for library, entry in manifest.libraries.items():
                wanted[library] = dict.fromkeys(entry.get("symbols", {}))
                for path, record in entry.get("symbols", {}).items():
                    first_uses[library, path] = record.get("first_use", "")
                    if record.get("pulled"):
                        pulled.add((library, path))
                entry["symbols"], entry["aliases"] = {}, entry.get("aliases", {})
            self.add(manifest, wanted, report)
            report.added, report.typed = [], []
            for library, entry in manifest.libraries.items():
                for path, record in entry["symbols"].items():
                    record["first_use"] = first_uses.get((library, path), "")
                    if (library, path) in pulled:
                        record["pulled"] = True
            report.written = self.generate(manifest, manifest.libraries)
            manifest.save()
        return report

    def prune(self, dry_run: bool) -> list[str]:
        with self.lock():
            manifest = self.manifest()
            uses = self.scan().uses
            used: dict[str, set[str]] = defaultdict(set)
            for use in uses:
                entry = manifest.libraries.get(use.library, {})
                used[use.library].add(entry.get("aliases", {}).get(use.symbol, use.symbol))
            removed = []
            for library, entry in manifest.libraries.items():
                for path in list(entry.get("symbols", {})):
                    kept = any(u == path or u.startswith(path + ".") for u in used[library])
                    kept = kept or bool(entry["symbols"][path].get("pulled") and used[library])
                    if not kept:
                        removed.append(f"{library}.{path}")
                        if not dry_run:
                            del entry["symbols"][path]
                entry["aliases"] = {
                    a: c for a, c in entry.get("aliases", {}).items() if c in entry["symbols"]
                }
            if not dry_run and removed:
                shutil.rmtree(self.generated_dir, ignore_errors=True)
                manifest.files = {}
                self.generate(manifest, manifest.libraries)
                manifest.save()
            return removed

    def ledger(self) -> dict[str, dict[str, int]]:
        path = self.state_dir / "ledger.json"
        try:
            data: dict[str, dict[str, int]] = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise CodegenError(
                f"{path} is corrupt; delete it (it only lists dynamic calls)"
            ) from None
        return data

    def promote(self, names: list[str]) -> SyncReport:
        ledger = self.ledger()
        wanted: dict[str, dict[str, Use | None]] = defaultdict(dict)
        for library, calls in ledger.items():
            for dotted in calls:
                if not names or f"{library}.{dotted}" in names:
                    wanted[library][dotted] = None
        for name in names:
            library, _, dotted = name.partition(".")
            if dotted:
                wanted[library].setdefault(dotted, None)
        report = SyncReport()
        with self.lock():
            manifest = self.manifest()
            changed = self.add(manifest, wanted, report)
            report.written = self.generate(manifest, changed)
            manifest.save()
        remaining = {
            lib: {d: n for d, n in calls.items() if not manifest.covers(lib, d)}
            for lib, calls in ledger.items()
        }
        atomic_write(
            self.state_dir / "ledger.json",
            json.dumps({k: v for k, v in remaining.items() if v}, indent=2, sort_keys=True) + "\n",
        )
        return report
