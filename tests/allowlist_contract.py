"""An import-linter contract type: the modules a package may reach, as an allow-list.

import-linter's own contracts are deny-lists (`forbidden`): a package nobody
thought to forbid slips through, and with `allow_indirect_imports` so does a
forbidden one behind an allowed module. This contract walks every import chain
that starts in `source_modules` instead, and every module it reaches — the
project's own or a third party's, directly or through any number of the
project's modules — must be in `source_modules`, `allowed_modules` or the
standard library. A failure prints the chain that reached the module.

Configured in pyproject.toml (`contract_types = ["allowlist: ..."]`).
"""

from __future__ import annotations

import sys
from collections import deque

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


def _within(module: str, packages: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


class AllowListContract(Contract):
    """Everything reachable from `source_modules` is allowed by name, or the check fails.

    Options:
        source_modules:  packages whose imports are checked (and which may import each other).
        allowed_modules: packages they may reach, the project's or third parties' (top-level
                         names, as grimp reports external packages).
    """

    type_name = "allowlist"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_modules = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        sources = set(self.source_modules)  # type: ignore[arg-type]
        allowed = sources | set(self.allowed_modules or [])  # type: ignore[arg-type]
        stdlib = set(sys.stdlib_module_names) | {"__future__"}
        start = {m for m in graph.modules if _within(m, sources)}
        # Breadth-first over import edges, remembering how each module was reached.
        came_from: dict[str, str | None] = {m: None for m in start}
        todo = deque(sorted(start))
        violations: list[dict] = []
        while todo:
            module = todo.popleft()
            for target in sorted(graph.find_modules_directly_imported_by(module)):
                if target in came_from:
                    continue
                came_from[target] = module
                top = target.split(".")[0]
                if top in stdlib:
                    continue
                if not _within(target, allowed):
                    violations.append({"module": target, "chain": self._chain(came_from, target),
                                       "lines": self._lines(graph, module, target)})
                    continue
                todo.append(target)
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    @staticmethod
    def _chain(came_from: dict[str, str | None], target: str) -> list[str]:
        chain = [target]
        while came_from[chain[-1]] is not None:
            chain.append(came_from[chain[-1]])  # type: ignore[arg-type]
        return chain[::-1]

    @staticmethod
    def _lines(graph: ImportGraph, importer: str, imported: str) -> list[int]:
        details = graph.get_import_details(importer=importer, imported=imported)
        return sorted({d["line_number"] for d in details})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for violation in check.metadata["violations"]:
            chain = " -> ".join(violation["chain"])
            where = ", ".join(f"l.{n}" for n in violation["lines"])
            output.print_error(f"{violation['module']} is not allowed: {chain} ({where})",
                               bold=False)
            output.new_line()
