"""The codegen pipeline: scan → compare with the manifest → introspect → generate → record."""

from __future__ import annotations

import json
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
from snakebridge.codegen.generator import header, render_module, sanitize
from snakebridge.codegen.manifest import CodegenError, Manifest, atomic_write, content_hash
from snakebridge.codegen.scanner import ScanResult, Use, scan_paths
from snakebridge.config import LibrarySpec, Settings
from snakebridge.envs.lock import Lock, generator_hash
from snakebridge.runtime.interpreters import interpreter_for

__all__ = ["Project", "SyncReport"]

INTROSPECT = Path(__file__).with_name("introspect.py")
TIERS = ("runtime", "text_signature", "stub", "docstring", "variadic")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _excluded(dotted: str, exclude: list[str]) -> bool:
    return any(dotted == name or dotted.startswith(name + ".") for name in exclude)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("snakebridge")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


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
        if libraries is None:
            return LibrarySpec(), name
        spec = libraries.get(name)
        if spec is None:
            raise CodegenError(
                f"library {name!r} is used but not listed in [tool.snakebridge.libraries] of "
                f'{self.settings.path}; add it (e.g. {name} = "stdlib" or a version)'
            )
        return spec, spec.module or name

    # -- scanning -----------------------------------------------------------------------------
    def scan(self) -> ScanResult:
        roots = [self.settings.root / p for p in (self.settings.scan or ("."))]
        return scan_paths(
            [r for r in roots if r.exists()],
            self.settings.generated.split(".")[0],
            self.settings.root,
            cache_file=self.state_dir / "cache" / "scan.json",
            skip=self.generated_dir,
        )

    # -- introspection ------------------------------------------------------------------------
    def introspect(
        self, library: str, symbols: Iterable[str], everything: bool = False
    ) -> dict[str, Any]:
        spec, module = self.library(library)
        request = {
            "library": library,
            "package": spec.package or library,
            "module": module,
            "symbols": sorted(set(symbols)),
            "all": everything,
            "depth": spec.depth,
        }
        interpreter = interpreter_for(self.settings, spec.env)
        done = subprocess.run(
            [interpreter, "-I", str(INTROSPECT)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            cwd="/",
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
    def generate(self, manifest: Manifest, libraries: Iterable[str]) -> list[str]:
        """Rewrite the facade tree of ``libraries`` from the manifest; paths written."""
        written: list[str] = []
        root_init = self.generated_dir / "__init__.py"
        version = _version()
        package_doc = (
            f"{header(version, 'snakebridge', version)}"
            f'"""Facades generated by `snakebridge sync`."""\n'
        )
        for path, text in ((root_init, package_doc), (self.generated_dir / "py.typed", "")):
            if atomic_write(path, text):
                written.append(str(path.relative_to(self.settings.root)))
            manifest.files[str(path.relative_to(self.settings.root))] = content_hash(text)
        for library in sorted(set(libraries)):
            written += self._generate_library(manifest, library, version)
        return written

    def _generate_library(self, manifest: Manifest, library: str, version: str) -> list[str]:
        entry = manifest.libraries.get(library, {})
        modules: dict[str, dict[str, Any]] = defaultdict(dict)
        modules[""] = {}
        for path, record in entry.get("symbols", {}).items():
            prefix, _, name = path.rpartition(".")
            info = record["info"]
            if info.get("kind") == "module":
                modules[path]
                continue
            modules[prefix][name] = info
        for prefix in list(modules):
            parts = prefix.split(".") if prefix else []
            for i in range(len(parts)):
                modules[".".join(parts[:i])]
        written = []
        for prefix in sorted(modules):
            children = {
                m.split(".")[-1]
                for m in modules
                if m and m.rpartition(".")[0] == prefix and m != prefix
            }
            lib_path = f"{library}.{prefix}" if prefix else library
            text = render_module(
                version=version,
                library=library,
                resolved=entry.get("resolved", "unknown"),
                lib_path=lib_path,
                symbols=modules[prefix],
                children=children,
            )
            parts = [sanitize(p) for p in prefix.split(".")] if prefix else []
            path = self.generated_dir.joinpath(library, *parts, "__init__.py")
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
        """Introspect symbols the manifest lacks and record them; libraries that changed."""
        changed: set[str] = set()
        for library in sorted(wanted):
            spec, _ = self.library(library)
            requested = {**dict.fromkeys(spec.include), **wanted[library]}
            missing = {
                s: u
                for s, u in requested.items()
                if not manifest.covers(library, s) and not _excluded(s, spec.exclude)
            }
            everything = spec.generate == "all" and not manifest.libraries.get(library)
            if not missing and not everything and library in manifest.libraries:
                continue
            if progress is not None:
                progress(library)
            result = self.introspect(library, missing, everything=everything)
            entry = manifest.libraries.setdefault(
                library, {"resolved": "", "symbols": {}, "aliases": {}}
            )
            entry["resolved"] = result.get("version", "unknown")
            entry["generator"] = generator_hash()
            interpreter = self._locked_interpreter(spec.env)
            if interpreter:
                entry["interpreter"] = interpreter
            changed.add(library)
            for dotted, message in sorted(result.get("errors", {}).items()):
                use = missing.get(dotted)
                where = f"{use.file}:{use.line}: " if use else ""
                report.errors.append(f"{where}{library}.{dotted}: {message}")
            for dotted, info in sorted(result.get("symbols", {}).items()):
                root = self.library(library)[1]
                prefix = info["module"][len(root) :].lstrip(".")
                canonical = ".".join(p for p in (prefix, info.get("qualname", "")) if p)
                if not canonical:
                    continue
                if canonical != dotted:
                    entry["aliases"][dotted] = canonical
                tier = str(info.get("tier", "variadic"))
                if TIERS.index(tier) > TIERS.index(spec.min_signature_tier):
                    use = missing.get(dotted)
                    where = f"{use.file}:{use.line}: " if use else ""
                    report.errors.append(
                        f"{where}{library}.{dotted}: only a {tier} signature was found, below "
                        f"min_signature_tier = {spec.min_signature_tier!r}"
                    )
                    continue
                if canonical in spec.streaming or dotted in spec.streaming:
                    info["streaming"] = True
                if canonical not in entry["symbols"]:
                    use = missing.get(dotted)
                    entry["symbols"][canonical] = {
                        "info": info,
                        "hash": content_hash(info),
                        "first_use": f"{use.file}:{use.line}" if use else "",
                    }
                    report.added.append(f"{library}.{canonical}")
        return changed

    def sync(self, progress: Callable[[str], None] | None = None) -> SyncReport:
        report = SyncReport()
        with self.lock():
            scanned = self.scan()
            report.errors += scanned.errors
            manifest = self.manifest()
            wanted: dict[str, dict[str, Use | None]] = {
                lib: dict(symbols) for lib, symbols in self._wanted(scanned.uses).items()
            }
            for library, spec in (self.settings.libraries or {}).items():
                if spec.generate == "all":
                    wanted.setdefault(library, {})
            changed = self.add(manifest, wanted, report, progress)
            if changed or not (self.generated_dir / "__init__.py").exists():
                report.written = self.generate(manifest, changed)
            manifest.save()
        return report

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
        problems += self._stale_libraries(manifest)
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

    def _locked_interpreter(self, env: str) -> str:
        """The interpreter hash the lock records for ``env`` ("" when there is none)."""
        lock = Lock.load(self.settings.root)
        entry = lock.envs.get(env) if lock is not None else None
        return str(entry["python"]["sha256"]) if entry else ""

    def _stale_libraries(self, manifest: Manifest) -> list[str]:
        """Libraries whose facades were generated by another generator or library version."""
        problems = []
        lock = Lock.load(self.settings.root)
        current = generator_hash()
        for library, entry in sorted(manifest.libraries.items()):
            if entry.get("generator", current) != current:
                problems.append(
                    f"{library}: facades come from another version of the generator; "
                    "run `snakebridge regen`"
                )
            spec = (self.settings.libraries or {}).get(library)
            if lock is None or spec is None or spec.is_stdlib:
                continue
            env = lock.envs.get(spec.env, {})
            if entry.get("interpreter") and env and entry["interpreter"] != env["python"]["sha256"]:
                problems.append(
                    f"{library}: facades were generated with another interpreter than "
                    f"environment {spec.env!r} now has; run `snakebridge regen`"
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
            for library, entry in manifest.libraries.items():
                wanted[library] = dict.fromkeys(entry.get("symbols", {}))
                for path, record in entry.get("symbols", {}).items():
                    first_uses[library, path] = record.get("first_use", "")
                entry["symbols"], entry["aliases"] = {}, entry.get("aliases", {})
            self.add(manifest, wanted, report)
            report.added = []
            for library, entry in manifest.libraries.items():
                for path, record in entry["symbols"].items():
                    record["first_use"] = first_uses.get((library, path), "")
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
