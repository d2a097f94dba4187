"""The sensitivity half of a generated JAX module: ``init_sens``, ``_advance_sens``,
``_record_sens`` (docs/jax.md, "Sensitivities").

:class:`SensitivityWriter` runs beside :class:`.emit.ModuleWriter` on the same Plan.  For
each line of the primal step it writes the line (the same call, so the primal values are
the module's own) and then its tangent: mechanism functions through their ``_sens``
companions (:mod:`.sens`), the glue (node indexing, sums of currents, the pool's ``iCa``,
Nernst, per-placement densities, capacitance, axial conductances) by its chain rule here.
The voltage step's tangent solves with the voltage's own tree factorisation.

Everything is the exact derivative of the primal update, so ``simulate_sens`` equals
``jax.jvp`` of ``simulate`` to rounding (tests/test_jax_sensitivity.py).
"""

from __future__ import annotations

import re

from ...errors import ModelError, UnsupportedError
from .printer import py_name
from .sens import (TangentFunction, advance_tangent, check_selected, current_tangent,
                   expression_tangent, init_tangent)

__all__ = ["SensitivityWriter"]

#: A recorded quantity that is a state read: its tangent is the same read of S.
_STATE_READ = re.compile(r's(\["[^"]*"\])+(\[\d+\])')
_NUMBER = re.compile(r"-?[0-9.e+-]+")


class SensitivityWriter:
    """Writes the tangent functions and the bodies of the sensitivity functions."""

    def __init__(self, writer, params: list[str]):
        self.w, self.plan = writer, writer.plan
        self.selected = set(params)
        self.used: dict[str, TangentFunction] = {}
        if writer.jacobian != "analytic":
            raise UnsupportedError("sensitivities need jacobian='analytic' (the exact di/dv; "
                                   "NEURON's difference quotient is not differentiated)")
        if self.plan.points:
            raise UnsupportedError("sensitivities of point cells in the JAX backend "
                                   f"({', '.join(self.plan.points)}): not emitted")
        for code in self.plan.codes.values():
            check_selected(code.sm, code.binds, self.selected)
        for g in self.plan.inputs:
            binds = {py_name(n): p.path for n, p in g.code.mech.parameters.items()}
            check_selected(g.code.sm, binds, self.selected)

    # ---- helpers -----------------------------------------------------------------------

    def fn(self, tf: TangentFunction) -> TangentFunction:
        self.used.setdefault(tf.name, tf)
        return self.used[tf.name]

    @staticmethod
    def call(tf: TangentFunction, values: dict, tangents: dict, new: str | None = None) -> str:
        missing = [a for a in tf.args if a not in values]
        if missing:
            raise UnsupportedError(f"{tf.name}: cannot supply {', '.join(missing)}")
        args = ["p"] + [f"{a}={values[a]}" for a in tf.args]
        for a in tf.tangent_args:
            if a not in tangents:
                raise ModelError(f"{tf.name}: no tangent for argument {a} (a bug)")
            if tangents[a] is not None:
                args.append(f"d_{a}={tangents[a]}")
        if new is not None:
            args.append(f"new={new}")
        return f"{tf.name}({', '.join(args)})"

    def dsource(self, src) -> str | None:
        """The tangent of ``ModuleWriter.source(src)``: a parameter's unit row, or None."""
        if src is None or isinstance(src, (int, float)):
            return None
        return f'SENS_BASIS.get("{src.path}")' if src.path in self.selected else None

    def dper_node(self, sources: list, name: str) -> str | None:
        """The tangent of ``ModuleWriter.per_node(sources, name)``: [N_NODES, P]."""
        table, index = [], []
        for s in sources:
            text = self.w.source(s)
            if text not in [t for t, _ in table]:
                table.append((text, self.dsource(s)))
            index.append([t for t, _ in table].index(text))
        if all(d is None for _, d in table):
            return None
        if len(table) == 1:
            return f"jnp.broadcast_to({table[0][1]}, (N_NODES, NP))"
        idx = self.w.nodes(f"{name}_INDEX", index)
        return f"jnp.stack([{', '.join(d or 'ZERO_P' for _, d in table)}])[{idx}]"

    def dper_piece(self, g, dtext) -> str | None:
        """The tangent of a per-placement value of a channel group: [n, P] (or None)."""
        parts = [dtext(pc, k) for k, pc in enumerate(g.pieces)]
        if all(d is None for d in parts):
            return None
        if len(parts) == 1:
            return parts[0]
        return "jnp.concatenate([" + ", ".join(
            f"jnp.broadcast_to({d or 'ZERO_P'}, ({len(pc.nodes)}, NP))"
            for d, pc in zip(parts, g.pieces)) + "])"

    # ---- value tangents ----------------------------------------------------------------

    def _dgmax(self, g, pc, k) -> str | None:
        pl = pc.placement
        if "condDensity" in pl.inhomogeneous:
            text = self.w._gmax(g, pc, self._piece_nodes(g, pc, k))   # "<fn>(p, x=...)"
            name, rest = text.split("(", 1)
            primal = self.w.used[name]
            tf = expression_tangent(primal, self.selected)
            # x (the path length) is geometry: only the constants' columns
            tf.rows = [(k, [t for t in terms if t[1][0] == "theta"]) for k, terms in tf.rows]
            if not tf.rows[0][1]:
                return None
            tf = self.fn(tf)
            return f'{tf.name}({rest}["gmax"]'
        if pl.kind == "channelPopulation":
            num = pl.parameters["number"].path
            cond = g.code.mech.parameters["conductance"].path
            if not {num, cond} & self.selected:
                return None
            N = self._piece_nodes(g, pc, k)
            return (f'rt.jvp_sum((p["{cond}"] * 100.0 / AREA[{N}], SENS_BASIS.get("{num}")), '
                    f'(p["{num}"] * 100.0 / AREA[{N}], SENS_BASIS.get("{cond}")))')
        return self.dsource(pl.parameters.get("condDensity"))

    def _piece_nodes(self, g, pc, k) -> str:
        from .emit import _ident
        return self.w.nodes(f"N_{_ident(g.key)}_{k}", pc.nodes, f"{g.key}: {pc.placement.id}")

    def _derev(self, g, pc, k, state: str) -> str | None:
        pl = pc.placement
        if pl.erev_mode == "fixed":
            return self.dsource(pl.parameters["erev"])
        from .emit import VALENCE, placement_ion
        key, ion = f"{g.cell.id}/{pl.id}", placement_ion(pl)
        ci = self.w._concentration(key, pc.nodes, ion, state, "concentration")
        co = self.w._concentration(key, pc.nodes, ion, state, "extConcentration")
        dci = self._dconcentration(ci, state)
        dco = self._dconcentration(co, state)
        if dci is None and dco is None:
            return None
        return (f"rt.nernst_tangent({ci}, {co}, {dci}, {dco}, {VALENCE[ion]}, CELSIUS)")

    @staticmethod
    def _dconcentration(text: str, state: str) -> str | None:
        """The tangent of ``ModuleWriter._concentration``'s text (pool states, defaults)."""
        if _NUMBER.fullmatch(text):
            return None                     # NEURON's default concentration: constant
        S = {"s": "S", "out": "S_out"}[state]
        text = text.replace(f'{state}["', f'{S}["')
        return re.sub(r"jnp\.full\(1, [^)]*\)", "jnp.zeros((1, NP))", text)

    def channel_tangents(self, g, phase: str) -> dict[str, str | None]:
        N = self.w.groups[g.key]
        state = {"current": "s", "update": "out", "init": "s"}[phase]
        Sv = "S_out" if phase == "update" else "S"
        out = {"v": f'{Sv}["v"][{N}]', "t": None, "temperature": None, "dt": None}
        if phase != "init":
            out.update({py_name(x): f'S["{g.key}"]["{x}"]' for x in g.code.sm.states})
        out["gmax"] = self.dper_piece(g, lambda pc, k: self._dgmax(g, pc, k))
        out["erev"] = self.dper_piece(g, lambda pc, k: self._derev(g, pc, k, state))
        extra = {name for pc in g.pieces for name in pc.placement.parameters} - {
            "condDensity", "erev", "number", "permeability"}
        for name in sorted(extra | {"vShift"}):
            out[py_name(name)] = self.dper_piece(
                g, lambda pc, k: self.dsource(pc.placement.parameters.get(name)))
        values = self.w._channel_values(g, phase)
        for read in g.code.mech.reads:
            if read.endswith("Conc") and py_name(read) not in out:
                out[py_name(read)] = self._dconcentration(values[py_name(read)], state)
        return out

    def pool_tangents(self, g, phase: str) -> dict[str, str | None]:
        N = self.w.groups[g.key]
        sp = g.species
        out = {"surfaceArea": None, "temperature": None, "dt": None, "t": None,
               "v": f'{"S_out" if phase == "update" else "S"}["v"][{N}]'}
        for name, param in sp.parameters.items():
            out[py_name(name)] = self.dsource(param)
        ion_read = "i" + sp.ion[:1].upper() + sp.ion[1:]
        from .emit import _ident
        out[py_name(ion_read)] = (f"-dion_{_ident(sp.ion)}[{N}] * (AREA[{N}] * 0.01)[:, None]"
                                  if phase == "update" else None)
        if phase == "update":
            out.update({py_name(x): f'S["{g.key}"]["{x}"]' for x in g.code.sm.states})
        return out

    # ---- init_sens -----------------------------------------------------------------------

    def init_lines(self) -> list[str]:
        plan, w = self.plan, self.w
        lines = ["s = init(p)"]
        if plan.n_nodes:
            dv0 = self.dper_node(plan.v0_src, "V0")
            lines += ['v = s["v"]', f'S = {{"v": {dv0 or "jnp.zeros((N_NODES, NP))"}}}']
        else:
            lines.append("S = {}")
        for g in plan.pools:
            tf = self.fn(init_tangent(g.code, w.fn(g.code.init()), self.selected))
            call = self.call(tf, w._pool_reads(g, "init"), self.pool_tangents(g, "init"),
                             f's["{g.key}"]')
            lines.append(f'S["{g.key}"] = rt.broadcast_sens({call}, {len(g.nodes)}, NP)')
        for g in plan.channels:
            if not g.code.sm.states:
                continue
            tf = self.fn(init_tangent(g.code, w.fn(g.code.init()), self.selected))
            call = self.call(tf, w._channel_values(g, "init"), self.channel_tangents(g, "init"),
                             f's["{g.key}"]')
            lines.append(f'S["{g.key}"] = rt.broadcast_sens({call}, {len(g.nodes)}, NP)')
        for g in plan.inputs:
            lines.append(f'S["input:{g.key}"] = {self._input_init(g)}')
        lines.append("return s, S")
        return lines

    def _input_init(self, g) -> str:
        """The tangent of an input's initial value (a function of its parameters only)."""
        from .emit import ModuleWriter
        from ...passes.discretize import partial
        init = g.code.sm.init[g.code.var]
        params = g.code.mech.parameters
        outside = sorted(s.name for s in init.free_symbols if s.name not in params)
        if outside:
            raise UnsupportedError(f"sensitivities of input '{g.key}': its initial value "
                                   f"depends on {outside}")
        pairs = [(ModuleWriter._expr_text(partial(init, s), g.code), params[s.name].path)
                 for s in sorted(init.free_symbols, key=lambda s: s.name)
                 if params[s.name].path in self.selected]
        body = ", ".join(f'({c}, SENS_BASIS.get("{path}"))' for c, path in pairs)
        return (f'rt.broadcast_sens({{"x": rt.jvp_sum({body})}}, {len(g.placements)}, NP)["x"]')

    # ---- _advance_sens ----------------------------------------------------------------

    def advance_lines(self) -> list[str]:
        """The primal step's lines, each followed by its tangent."""
        plan, w = self.plan, self.w
        from .emit import _ident
        ions = sorted({g.species.ion for g in plan.pools})
        lines = ["S_out = dict(S)"]
        if plan.n_nodes:
            lines += ["i_m = jnp.zeros(N_NODES)", "g_m = jnp.zeros(N_NODES)",
                      "di_m = jnp.zeros((N_NODES, NP))  # tangents of i_m and g_m",
                      "dg_m = jnp.zeros((N_NODES, NP))"]
            for ion in ions:
                lines += [f"ion_{_ident(ion)} = jnp.zeros(N_NODES)",
                          f"dion_{_ident(ion)} = jnp.zeros((N_NODES, NP))"]
        for g in plan.channels:
            N = w.groups[g.key]
            f = w.fn(g.code.current())
            values = w._channel_values(g, "current")
            tf = self.fn(current_tangent(g.code, f, self.selected))
            lines += [f"# {g.key}: {g.code.mech.name}",
                      f"c = {w.call(f, values)}",
                      "i_m, g_m = rt.add_currents(i_m, g_m, " f"{N}, c)",
                      f"dc = {self.call(tf, values, self.channel_tangents(g, 'current'))}",
                      f"di_m, dg_m = rt.add_current_tangents(di_m, dg_m, {N}, dc, NP)"]
            if g.ion in ions:
                ion = _ident(g.ion)
                lines += [f"ion_{ion} = rt.add_rows(ion_{ion}, {N}, rt.total_current(c))",
                          f"dion_{ion} = rt.add_at(dion_{ion}, {N}, 1.0, "
                          "rt.total_current_tangent(dc), NP)"]
        for g in plan.inputs:
            lines += self._input_lines(g)
        if plan.n_nodes:
            lines += self._voltage_lines()
        for g in plan.pools:
            f = w.fn(g.code.advance())
            tf = self.fn(advance_tangent(g.code, f, self.selected))
            values = w._pool_reads(g, "update")
            new = f'out["{g.key}"]'
            lines += [f'{new} = rt.broadcast({w.call(f, values)}, {len(g.nodes)})',
                      f'S_out["{g.key}"] = rt.broadcast_sens('
                      f'{self.call(tf, values, self.pool_tangents(g, "update"), new)}, '
                      f'{len(g.nodes)}, NP)']
        for g in plan.channels:
            if not g.code.sm.states:
                continue
            f = w.fn(g.code.advance())
            tf = self.fn(advance_tangent(g.code, f, self.selected))
            values = w._channel_values(g, "update")
            new = f'out["{g.key}"]'
            lines += [f'{new} = rt.broadcast({w.call(f, values)}, {len(g.nodes)})',
                      f'S_out["{g.key}"] = rt.broadcast_sens('
                      f'{self.call(tf, values, self.channel_tangents(g, "update"), new)}, '
                      f'{len(g.nodes)}, NP)']
        lines.append("return out, S_out")
        return lines

    def _input_lines(self, g) -> list[str]:
        w = self.w
        f = w.fn(g.code.function())
        tf = self.fn(expression_tangent(f, self.selected))
        _, N, wt = w.input_targets[g.key]
        held = f's["input:{g.key}"]'
        var = py_name(g.code.var)
        values = {"t": "t_mid", "v": f"v[{N}]", var: held}
        tangents = {"t": None, "v": f'S["v"][{N}]', var: f'S["input:{g.key}"]'}
        n = len(g.placements)
        return [f"# input {g.key} ({g.code.mech.component_type})",
                f"x, dx = {w.call(f, values)}",
                f'out["input:{g.key}"] = x',
                f"i_m = rt.add_rows(i_m, {N}, -{wt} * x * 100.0 / AREA[{N}])",
                f"g_m = rt.add_rows(g_m, {N}, -{wt} * dx * 100.0 / AREA[{N}])",
                f"dx = {self.call(tf, values, tangents)}",
                f'S_out["input:{g.key}"] = rt.broadcast_sens({{"x": dx["value"]}}, {n}, NP)["x"]',
                f"di_m = rt.add_at(di_m, {N}, -{wt} * 100.0 / AREA[{N}], dx[\"value\"], NP)",
                f"dg_m = rt.add_at(dg_m, {N}, -{wt} * 100.0 / AREA[{N}], dx[\"d_dv\"], NP)"]

    def _voltage_lines(self) -> list[str]:
        lines = [
            "# -- the voltage step, factorised once for v and its tangents",
            "a, b = _axial(p)",
            "d = g_m + _cm(p) * (0.001 / dt)",
            "d, rhs = rt.tree_matrix(PARENT, a, b, N_ROOTS, v, d, -i_m)",
            "dfac, dv = rt.hines_factor_solve(PARENT, a, b, d, rhs, N_ROOTS)",
            "v_new = v + dv",
            'out["v"] = v_new',
            "# (C/dt + G + L) dDelta = -dI - dG Delta - dC/dt Delta - dL v_new + axial(S_v)",
            "delta = (v_new - v)[:, None]",
            'r = -di_m - dg_m * delta + rt.tree_rhs(PARENT, a, b, N_ROOTS, S["v"])']
        dcm = self.dper_node(self.plan.cm_src, "CM")
        if dcm is not None:
            lines.append(f"r = r - {dcm} * (0.001 / dt) * delta  # capacitance")
        dra = self.dper_node(self.plan.ra_src, "RA")
        if dra is not None:
            lines += ["da, db = _axial_tangent(p, a, b)  # resistivity",
                      "r = r + rt.tree_rhs(PARENT, da, db, N_ROOTS, v_new)"]
            self.extra_axial = dra
        lines.append('S_out["v"] = S["v"] + rt.hines_substitute(PARENT, a, b, dfac, r, N_ROOTS)')
        return lines

    def extra_functions(self) -> list[str]:
        dra = getattr(self, "extra_axial", None)
        if dra is None:
            return []
        return ["\n".join([
            "def _axial_tangent(p, a, b):",
            '    """Tangents of _axial\'s a, b along the resistivity parameters: both are',
            '    proportional to 1/r with r = (RI_PREV + RI_LEFT) * ra * 0.04 / PI."""',
            f"    ra = {self.w.ra}",
            "    r = RI_PREV * ra / PI * 0.04 + RI_LEFT * ra / PI * 0.04",
            f"    dr = (RI_PREV / PI * 0.04 + RI_LEFT / PI * 0.04)[:, None] * {dra}",
            "    return -a[:, None] * dr / r[:, None], -b[:, None] * dr / r[:, None]"])]

    # ---- _record_sens -------------------------------------------------------------------

    def record_lines(self) -> list[str]:
        lines = []
        for of in self.plan.sim.outputs:
            for col in of.columns:
                text, _ = self.w._quantity(col.quantity)
                if _NUMBER.fullmatch(text):
                    lines.append(f"ZERO_P,  # {col.quantity.text}")
                elif _STATE_READ.fullmatch(text):
                    lines.append(f"S{text[1:]},  # {col.quantity.text}")
                else:
                    raise UnsupportedError(
                        f"sensitivities of the recorded quantity '{col.quantity.text}': the "
                        "JAX backend records the sensitivities of v, concentrations, states "
                        "and inputs, not of derived quantities")
        return lines

    def functions(self) -> list[str]:
        return [f.render() for f in sorted(self.used.values(), key=lambda f: f.name)]
