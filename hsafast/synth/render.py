"""Rendering a case's H&E or IHC slide, one block of pixels at a time.

A block is at most one texture period wide, so memory stays bounded whatever the
slide size. Smooth tissue fields are sampled through the true inverse transform
(IHC pixel -> H&E position), cells and glands are drawn as polygons at their
transformed positions, and the two stain concentration maps are turned into
colour by Beer-Lambert (:mod:`hsafast.synth.optics`).
"""

from __future__ import annotations

import cv2
import numpy as np

from hsafast.synth.cells import IMMUNE, TUMOUR
from hsafast.synth.model import CaseModel
from hsafast.synth.optics import compose, finish, packed_lut
from hsafast.synth.textures import PERIOD, TextureBank, texture_bank

_SHIFT = 2  # sub-pixel bits for cv2 polygon drawing
_K = 14  # vertices per nucleus outline
_ANGLES = np.linspace(0, 2 * np.pi, _K, endpoint=False)
_UNIT = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], 1)  # (K, 2)
_NUC_SCALE = 1.6  # darkness that maps to 255 in the nucleus buffer
_COARSE = 32  # pixels between exactly mapped points of the inverse transform
_FINE = 8  # pixels between exact samples of the smooth fields
_MARGIN = 4  # pixels rendered around a block for the scanner blur
#: The largest block :meth:`SlideRenderer.render_block` accepts.
MAX_BLOCK = PERIOD - 2 * _MARGIN


def _jitter(ids: np.ndarray, salt: float) -> np.ndarray:
    """Deterministic pseudo-random (N, K) values in [-0.5, 0.5) from cell ids."""
    k = np.arange(_K)[None, :]
    v = np.sin(ids[:, None] * 12.9898 + k * 78.233 + salt) * 43758.5453
    return v - np.floor(v) - 0.5


class SlideRenderer:
    """Draws one slide (``stain`` "he" or "ihc") of a :class:`CaseModel`."""

    def __init__(self, model: CaseModel, stain: str) -> None:
        self.model = model
        self.stain = stain
        self.ihc = stain == "ihc"
        self.style = model.ihc_style if self.ihc else model.he_style
        self.lut = self.style.lut()
        self.lut32 = packed_lut(self.lut)
        self.stack = self._stack(model)
        self._scratch: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}
        self.bank: TextureBank = texture_bank(
            round(1.0 / model.spec.mpp, 3), noise_sigma=self.style.noise_sigma
        )
        seed = int(model.spec.seed[-1]) * 2 + int(self.ihc)
        rng = np.random.default_rng(seed)
        self.tex_offset = (int(rng.integers(PERIOD)), int(rng.integers(PERIOD)))
        cells = model.cells
        lin = model.deformation.linear if self.ihc else np.eye(2)
        keep = model.present if self.ihc else np.ones(len(cells), bool)
        idx = np.flatnonzero(keep)
        centres = model.ihc_xy[idx] if self.ihc else np.stack([cells.x, cells.y], 1)[idx]
        c, s = np.cos(cells.angle[idx]), np.sin(cells.angle[idx])
        rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (N, 2, 2)
        shape = rot * np.stack([cells.a[idx], cells.b[idx]], -1)[:, None, :]
        self.shape = lin[None] @ shape
        order = np.argsort(centres[:, 1], kind="stable")
        self.idx = idx[order]
        self.centres = centres[order]
        self.shape = self.shape[order]
        body = cells.cell_scale[self.idx]
        self.radius = np.maximum(cells.a, cells.b)[self.idx] * body * 1.5 + 6
        self.reach = float(self.radius.max()) if len(self.radius) else 0.0
        # glands and nests, in this slide's coordinates
        g = model.layout.glands
        if len(g):
            gc = np.stack([g[:, 0], g[:, 1]], 1)
            if self.ihc:
                gc = model.deformation.forward(gc)
            c, s = np.cos(g[:, 4]), np.sin(g[:, 4])
            grot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
            gshape = lin[None] @ (grot * np.stack([g[:, 2], g[:, 3]], -1)[:, None, :])
        else:
            gc, gshape = np.zeros((0, 2)), np.zeros((0, 2, 2))
        self.gland_centres = gc
        self.gland_shape = gshape
        self.gland_lumen = g[:, 5] if len(g) else np.zeros(0)
        self.gland_reach = (
            np.abs(gshape).sum(axis=2).max(axis=1) * 1.1 + 4 if len(g) else np.zeros(0)
        )

    def _stack(self, model: CaseModel) -> np.ndarray:
        """Smooth fields on the layout grid, (fh, fw, C): tissue, then the weights of
        stroma (eosin), fat, necrosis and cellular stroma, the four collagen directions,
        and for IHC the section's thickness factor (0 where lost, about 2 in folds)."""
        layout = model.layout
        tissue, tumour, necrosis, fat = (layout.base[..., k] for k in range(4))
        alive = 1.0 - necrosis
        stroma = alive * (1.0 - fat)
        stroma_e = stroma if self.ihc else stroma * (1.0 - 0.25 * tumour)
        planes = [tissue, stroma_e, alive * fat, necrosis, stroma]
        planes += [layout.fibre[..., k] for k in range(4)]
        if self.ihc:
            planes.append((1.0 - layout.ihc[..., 0]) * (1.0 + 0.9 * layout.ihc[..., 1]))
        return np.ascontiguousarray(np.stack(planes, 0).astype(np.float32))

    # -- geometry helpers ---------------------------------------------------------------
    def _fields(self, x0: int, y0: int, w: int, h: int, glass_ok: bool) -> np.ndarray | None:
        """The renderer's smooth fields at every pixel of the block, planar (C, h, w).

        Returns None, when ``glass_ok``, for a block that holds no tissue at all.

        Fields are sampled exactly (through the inverse transform for IHC) on nodes
        every ``_FINE`` pixels and interpolated linearly in between: they vary over
        tens of micrometres, so this is exact to well under a pixel where it matters.
        """
        k, big = _FINE, _COARSE
        c = big // k
        # node grids start one coarse cell before the block and end after it, so that
        # no pixel of the block is interpolated from clamped edge nodes
        # (aligned to multiples of the coarse step, so that every block samples the
        # fields at the same nodes and adjacent blocks agree to the last bit)
        ox, oy = (x0 // big) * big - big, (y0 // big) * big - big
        sx, sy = x0 - ox, y0 - oy
        cw, ch = -(-(sx + w + big) // big) + 1, -(-(sy + h + big) // big) + 1
        gw, gh = cw * c, ch * c
        if self.ihc:
            coff = (big - 1) / 2
            qx, qy = np.meshgrid(ox + np.arange(cw) * big + coff, oy + np.arange(ch) * big + coff)
            p = self.model.deformation.inverse(np.stack([qx.ravel(), qy.ravel()], 1))
            px = cv2.resize(p[:, 0].reshape(ch, cw), (gw, gh))
            py = cv2.resize(p[:, 1].reshape(ch, cw), (gw, gh))
        else:
            off = (k - 1) / 2
            px, py = np.meshgrid(ox + np.arange(gw) * k + off, oy + np.arange(gh) * k + off)
        scale = 1.0 / float(self.model.layout.step)
        fx = (np.asarray(px, np.float64) * scale - 0.5).astype(np.float32)
        fy = (np.asarray(py, np.float64) * scale - 0.5).astype(np.float32)
        out = self._buffer("fields", (len(self.stack), h, w))
        full = self._buffer("resize", (gh * k, gw * k))
        for channel, plane in enumerate(self.stack):
            coarse = cv2.remap(plane, fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if channel == 0 and glass_ok and float(coarse.max()) <= 0.0:
                return None
            cv2.resize(coarse, (gw * k, gh * k), dst=full)
            out[channel] = full[sy : sy + h, sx : sx + w]
        return out

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A scratch float32 array reused across blocks of the same size."""
        key = (name, shape)
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = np.empty(shape, np.float32)
        return buf

    def _cells_in(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        r = self.reach
        lo, hi = np.searchsorted(self.centres[:, 1], [y0 - r, y0 + h + r])
        sel = np.arange(lo, hi)
        cx = self.centres[sel, 0]
        return sel[(cx > x0 - r) & (cx < x0 + w + r)]

    def _outline(
        self, sel: np.ndarray, x0: int, y0: int, scale: np.ndarray | float, rough: np.ndarray
    ) -> np.ndarray:
        """Integer polygon vertices (N, K, 2) for cv2 with ``_SHIFT`` fractional bits."""
        radial = 1.0 + rough[:, None] * _jitter(self.idx[sel].astype(np.float64), 0.0)
        unit = _UNIT[None] * (radial * np.asarray(scale).reshape(-1, 1))[..., None]
        pts = np.einsum("nij,nkj->nki", self.shape[sel], unit)
        pts += self.centres[sel, None, :] - (x0, y0)
        return np.rint(pts * (1 << _SHIFT)).astype(np.int32)

    @staticmethod
    def _fill(img: np.ndarray, pts: np.ndarray, values: np.ndarray, outline: int = 0) -> None:
        """Draw polygons grouped by 8-bit value (one cv2 call per distinct value)."""
        if len(pts) == 0:
            return
        q = np.clip(np.rint(values), 0, 255).astype(np.int32)
        for v in np.unique(q):
            group = list(pts[q == v])
            if outline:
                cv2.polylines(img, group, True, int(v), outline, cv2.LINE_AA, _SHIFT)
            else:
                cv2.fillPoly(img, group, int(v), cv2.LINE_AA, _SHIFT)

    def _glands(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Compartment mask: 0 stroma, 1 epithelium (cytoplasm), 2 lumen.

        Evaluated per pixel from each gland's ellipse (in its bounding box), so that
        the mask does not depend on where the block starts.
        """
        mask = np.zeros((h, w), np.uint8)
        if not len(self.gland_centres):
            return mask
        gc, r = self.gland_centres, self.gland_reach
        sel = np.flatnonzero(
            (gc[:, 0] > x0 - r)
            & (gc[:, 0] < x0 + w + r)
            & (gc[:, 1] > y0 - r)
            & (gc[:, 1] < y0 + h + r)
        )
        for g in sel:
            cx, cy = gc[g]
            bx0, bx1 = max(int(cx - r[g]), x0), min(int(cx + r[g]) + 1, x0 + w)
            by0, by1 = max(int(cy - r[g]), y0), min(int(cy + r[g]) + 1, y0 + h)
            if bx0 >= bx1 or by0 >= by1:
                continue
            inv = np.linalg.inv(self.gland_shape[g])
            dx = np.arange(bx0, bx1, dtype=np.float64) + 0.5 - cx
            dy = np.arange(by0, by1, dtype=np.float64)[:, None] + 0.5 - cy
            u = inv[0, 0] * dx + inv[0, 1] * dy
            v = inv[1, 0] * dx + inv[1, 1] * dy
            rho = np.hypot(u, v)
            # 1 + 0.04 sin(3 theta + phase), without evaluating theta
            cos_t = u / np.maximum(rho, 1e-9)
            sin_t = v / np.maximum(rho, 1e-9)
            sin3 = sin_t * (3 - 4 * sin_t * sin_t)
            cos3 = cos_t * (4 * cos_t * cos_t - 3)
            phase = g * 1.7
            wobble = 1 + 0.04 * (sin3 * np.cos(phase) + cos3 * np.sin(phase))
            region = mask[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0]
            region[rho < wobble] = 1
            lumen = self.gland_lumen[g]
            if lumen > 0:
                region[rho < lumen * wobble] = 2
        return mask

    # -- the block ------------------------------------------------------------------------
    def render_block(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """RGB uint8 (h, w, 3) pixels of the slide region with top-left (x0, y0).

        The block is rendered with a margin that the scanner blur needs, so that
        adjacent blocks join without seams.
        """
        m = _MARGIN
        if w + 2 * m > PERIOD or h + 2 * m > PERIOD:
            raise ValueError(f"blocks are at most {MAX_BLOCK} pixels on a side, got {w}x{h}")
        rgb = self._render(x0 - m, y0 - m, w + 2 * m, h + 2 * m)
        return np.ascontiguousarray(rgb[m : m + h, m : m + w])

    def _render(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        bank = self.bank
        tx, ty = x0 + self.tex_offset[0], y0 + self.tex_offset[1]
        noise_up = bank.window("noise_up", tx, ty, w, h)
        noise_down = bank.window("noise_down", tx + 37, ty + 91, w, h)
        sel = self._cells_in(x0, y0, w, h)
        f = self._fields(x0, y0, w, h, glass_ok=not len(sel))
        if f is None:
            rgba = np.empty((h, w), np.uint32)
            rgba[:] = self.lut32[0]
            return finish(rgba.view(np.uint8).reshape(h, w, 4), self.style, noise_up, noise_down)
        # an irregular tissue edge: threshold the smooth tissue field with coarse noise
        thick = f[0]
        fib = self._buffer("fib", (h, w))
        tmp = self._buffer("tmp", (h, w))
        np.multiply(thick, 8.0, out=tmp)
        thick -= 0.5
        thick += 0.12 * bank.window("blotch", tx + 517, ty + 229, w, h)
        thick *= 3.0
        thick += 0.5
        np.clip(thick, 0.0, 1.0, out=thick)
        np.minimum(thick, tmp, out=thick)
        if self.ihc:
            thick *= f[9]
        w_str, w_fat, w_nec, w_cell = f[1], f[2], f[3], f[4]
        np.multiply(f[5], bank.window_fibre(0, tx, ty, w, h), out=fib)
        for k in range(1, 4):
            np.multiply(f[5 + k], bank.window_fibre(k, tx, ty, w, h), out=tmp)
            fib += tmp
        blotch = bank.window("blotch", tx, ty, w, h)
        c1 = self._buffer("c1", (h, w))
        c2 = self._buffer("c2", (h, w))
        if self.ihc:
            np.multiply(fib, 0.1, out=c1)
            c1 += 0.045
            c1 *= w_str
            np.multiply(bank.window("fat", tx, ty, w, h), w_fat, out=tmp)
            tmp *= 0.35
            c1 += tmp
            np.multiply(w_nec, 0.04, out=c2)
            c2 += 0.012
        else:
            fib *= fib
            np.multiply(fib, 0.3, out=c2)
            c2 += 0.07
            c2 *= w_str
            np.multiply(bank.window("fat", tx, ty, w, h), w_fat, out=tmp)
            tmp *= 0.4
            c2 += tmp
            np.multiply(blotch, 0.06, out=tmp)
            tmp += 0.32
            tmp *= w_nec
            c2 += tmp
            np.multiply(fib, 0.04, out=c1)
            c1 += 0.02
            c1 *= w_cell
        np.multiply(bank.window("debris", tx, ty, w, h), 0.9, out=tmp)
        tmp += 0.12
        tmp *= w_nec
        if not self.ihc:
            tmp *= 0.7
        c1 += tmp
        mask = self._glands(x0, y0, w, h)
        if mask.any():
            epi, lum = mask == 1, mask == 2
            alive = 1.0 - w_nec[epi]
            if self.ihc:
                c1[epi] = 0.1 * alive
                c1[lum] = 0.01
            else:
                c2[epi] = (0.26 + 0.04 * blotch[epi]) * alive
                c1[epi] = 0.12 * alive
                c2[lum], c1[lum] = 0.03, 0.01
        np.multiply(blotch, 0.06, out=tmp)
        tmp += 1.0
        tmp *= thick
        c1 *= tmp
        c2 *= tmp
        if len(sel):
            self._draw_cells(sel, x0, y0, w, h, c1, c2, thick, tx, ty)
        rgba = compose(c1, c2, self.lut32)
        return finish(rgba, self.style, noise_up, noise_down)

    def _draw_cells(
        self,
        sel: np.ndarray,
        x0: int,
        y0: int,
        w: int,
        h: int,
        c1: np.ndarray,
        c2: np.ndarray,
        thick: np.ndarray,
        tx: int,
        ty: int,
    ) -> None:
        cells = self.model.cells
        ci = self.idx[sel]
        kind = cells.kind[ci]
        dark = cells.darkness[ci]
        rough = cells.irregularity[ci]
        tumour = kind == TUMOUR
        # draw on a canvas padded by the largest cell, so that no polygon is ever
        # clipped: clipping would make pixels depend on where blocks start
        pad = int(np.ceil(self.reach)) + 2
        x0, y0, w, h = x0 - pad, y0 - pad, w + 2 * pad, h + 2 * pad
        inner = (slice(pad, h - pad), slice(pad, w - pad))
        pts = self._outline(sel, x0, y0, 1.0, rough)
        nuc = np.zeros((h, w), np.uint8)
        counter = 0.62 if self.ihc else 1.0
        body = None
        if tumour.any():
            body = self._outline(
                sel[tumour], x0, y0, cells.cell_scale[ci[tumour]], np.full(tumour.sum(), 0.08)
            )
            if not self.ihc:
                border = np.zeros((h, w), np.uint8)
                self._fill(border, body, np.full(len(body), 255), outline=1)
                edge = border[inner].astype(np.float32) * (1.0 / 255)
                c2 += edge * 0.3
                c1 += edge * 0.05
        # vesicular tumour nuclei: a paler interior with a darker rim
        interior = np.where(tumour & ~cells.mitosis[ci], 0.78, 1.0) * dark
        self._fill(nuc, pts, interior * counter * 255 / _NUC_SCALE)
        rim = tumour & ~cells.mitosis[ci]
        if rim.any():
            self._fill(nuc, pts[rim], dark[rim] * 1.2 * counter * 255 / _NUC_SCALE, outline=2)
        spot = cells.nucleolus[ci] & ~cells.mitosis[ci]
        if spot.any():
            centre = pts[spot].mean(axis=1, keepdims=True)
            dots = np.rint((pts[spot] - centre) * 0.2 + centre).astype(np.int32)
            self._fill(nuc, dots, np.full(len(dots), 1.45 * counter * 255 / _NUC_SCALE))
        chromatin = self.bank.window("chromatin", tx, ty, w - 2 * pad, h - 2 * pad)
        nuc_od = nuc[inner].astype(np.float32) * chromatin * (_NUC_SCALE * 0.62 / 255)
        nuc_od *= np.maximum(thick, 1.0)  # cells are tissue; folds darken them
        c1 += nuc_od
        if not self.ihc:
            c2 += nuc_od * 0.45
            return
        expr = self.model.expression
        inten = expr.intensity[ci]
        pos = expr.positive[ci] & (inten > 0)
        if not pos.any():
            return
        dab = np.zeros((h, w), np.uint8)
        if expr.compartment == "membrane":
            membrane = pos & (tumour | (kind == IMMUNE))
            if membrane.any():
                sub = sel[membrane]
                scale = np.where(tumour[membrane], cells.cell_scale[ci[membrane]], 1.35)
                ring = self._outline(sub, x0, y0, scale, np.full(len(sub), 0.08))
                self._fill(dab, ring, inten[membrane] * 0.25 * 255 / 1.6)
                self._fill(dab, ring, inten[membrane] * 255 / 1.6, outline=3)
        else:
            big = self._outline(sel[pos], x0, y0, 1.08, rough[pos])
            self._fill(dab, big, inten[pos] * 255 / 1.6)
        dab_od = dab[inner].astype(np.float32) * (1.6 * 1.1 / 255)
        dab_od *= 0.75 + 0.25 * chromatin
        c2 += dab_od * np.maximum(thick, 1.0)
