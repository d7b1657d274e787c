"""The browser's pages as HTML strings. Every value from the catalog or the URL goes
through :func:`esc` (``html.escape``, quotes included) or into a URL through
``urllib.parse.quote``/``urlencode`` and then :func:`esc`; nothing else is spliced in.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from catalog.formats import ATTRIBUTES
from catalog.serve import queries as Q
from catalog.serve.static import CSS

RETRY_AFTER = 2


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str, params: Iterable[tuple[str, str]] = ()) -> str:
    query = urlencode([(k, v) for k, v in params if v is not None])
    return f"{path}?{query}" if query else path


def face_url(image_id: str, params: Iterable[tuple[str, str]] = ()) -> str:
    return url("/face/" + quote(image_id, safe=""), params)


def thumb_url(image_id: str, token: str) -> str:
    return url("/thumb/" + quote(image_id, safe="") + ".jpg", [("v", token)])


def image_url(image_id: str) -> str:
    return "/image/" + quote(image_id, safe="")


def number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def layout(title: str, body: str, *, catalog: str, head: str = "") -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · celebcat</title>{head}<style>{CSS}</style>"
        '<link rel="icon" href="/favicon.svg" type="image/svg+xml">'
        '<script src="/static/app.js" defer></script></head><body>'
        '<header><a class="brand" href="/">celebcat</a><nav>'
        '<a href="/">Faces</a><a href="/failures">Failures</a>'
        '<a href="/galleries">Galleries</a><a href="/sql">SQL</a></nav>'
        f'<span class="db">{esc(catalog)} (read-only)</span></header>'
        f"<main>{body}</main></body></html>"
    )


def error_box(messages: Iterable[str], element_id: str = "") -> str:
    ident = f' id="{esc(element_id)}"' if element_id else ""
    return "".join(f'<div class="error"{ident}>{esc(m)}</div>' for m in messages)


def busy(catalog: str, detail: str) -> str:
    body = (
        f'<h1>The catalog is busy</h1><p id="busy">Another process is writing '
        f"{esc(catalog)}; retrying in {RETRY_AFTER} s.</p>"
        f'<p class="note">{esc(detail)}</p>'
    )
    head = f'<meta http-equiv="refresh" content="{RETRY_AFTER}">'
    return layout("busy, retrying", body, catalog=catalog, head=head)


def tile(
    image_id: str,
    token: str,
    lines: Sequence[str] = (),
    *,
    link: Iterable[tuple[str, str]] = (),
    cls: str = "",
) -> str:
    extra = "".join(f"<span>{esc(t)}</span>" for t in lines)
    return (
        f'<a class="tile {esc(cls)}" href="{esc(face_url(image_id, link))}" '
        f'title="{esc(image_id)}"><img src="{esc(thumb_url(image_id, token))}" '
        f'alt="{esc(image_id)}" width="108" height="108" loading="lazy">'
        f"<span>{esc(image_id)}</span>{extra}</a>"
    )


def tiles(image_ids: Iterable[str], token: str, link: Iterable[tuple[str, str]] = ()) -> str:
    link = list(link)
    return '<div class="grid">' + "".join(tile(i, token, link=link) for i in image_ids) + "</div>"


def _options(choices: Iterable[tuple[str, str]], selected: str) -> str:
    return "".join(
        f'<option value="{esc(v)}"{" selected" if v == selected else ""}>{esc(label)}</option>'
        for v, label in choices
    )


# --- the grid -------------------------------------------------------------------------


def grid_page(
    *,
    catalog: str,
    q: Q.GridQuery,
    snapshot: str,
    snapshots: Sequence[str],
    split_counts: Sequence[tuple[str, int]],
    checks: Sequence[tuple[str, str, int]],
    landmark_runs: Sequence[tuple[str, str, str]],
    recognition_runs: Sequence[tuple[str, str, str]],
    result: Q.Grid | None,
    token: str,
    errors: Sequence[str],
) -> str:
    snap_choices = [(s, s) for s in snapshots] + [(Q.WHOLE, "whole catalog")]
    selected_snapshot = snapshot if q.snapshot is not None else (snapshots[0] if snapshots else "")
    sorts = [("", "image id")]
    sorts += [(f"nme:{r}", f"NME · {r}") for r, _, _ in landmark_runs]
    sorts += [(f"own_cosine:{r}", f"own-centre cosine · {r}") for r, _, _ in recognition_runs]
    sort_value = f"{q.sort[0]}:{q.sort[1]}" if q.sort else ""
    chosen = dict(q.attrs)
    attr_rows = "".join(
        f'<label for="attr-{esc(a)}">{esc(a)}</label>'
        f'<select name="attr" id="attr-{esc(a)}">'
        + _options(
            [("", "any"), (f"{a}:1", "yes"), (f"{a}:0", "no")],
            f"{a}:{int(chosen[a])}" if a in chosen else "",
        )
        + "</select>"
        for a in ATTRIBUTES
    )
    problems = [("", "any image"), (Q.ANY_PROBLEM, "with any problem")]
    problems += [(c, f"{c} ({sev}, {n})") for c, sev, n in checks]
    form = (
        '<form class="filters" method="get" action="/" id="filters">'
        '<label for="f-snapshot">snapshot</label><select name="snapshot" id="f-snapshot">'
        + _options(snap_choices, selected_snapshot)
        + '</select><label for="f-split">split</label><select name="split" id="f-split">'
        + _options([("", "all")] + [(s, f"{s} ({n})") for s, n in split_counts], q.split)
        + '</select><label for="f-identity">identity</label>'
        f'<input name="identity" id="f-identity" inputmode="numeric" '
        f'value="{esc("" if q.identity is None else q.identity)}">'
        '<label for="f-problem">problems</label><select name="problem" id="f-problem">'
        + _options(problems, q.problem)
        + '</select><label for="f-sort">sort by</label><select name="sort" id="f-sort">'
        + _options(sorts, sort_value)
        + '</select><label for="f-order">order</label><select name="order" id="f-order">'
        + _options([("", "worst first"), ("asc", "ascending"), ("desc", "descending")], q.order)
        + '</select><div class="buttons"><button type="submit" id="apply">Apply</button>'
        f'<a href="{esc(url("/", [("snapshot", selected_snapshot)]))}">clear</a></div>'
        f'<label>attributes</label><div class="attrs">{attr_rows}</div>'
        '<div class="buttons"><button type="submit">Apply</button></div></form>'
    )
    body = [f'<div class="layout"><aside>{form}</aside><section class="content">']
    body.append(error_box(errors))
    if result is not None:
        where = "the whole catalog" if snapshot == Q.WHOLE else f"snapshot {snapshot}"
        body.append(
            f'<p class="count"><strong id="count">{result.total:,}</strong> images match in '
            f"{esc(where)}"
            + (f" · page {result.query.page} of {result.pages}" if result.total else "")
            + "</p>"
        )
        pager = _pager(result)
        body.append(pager)
        link = [("run", q.sort[1])] if q.sort and q.sort[0] == "nme" else []
        link += [("emb", q.sort[1])] if q.sort and q.sort[0] == "own_cosine" else []
        label = {"nme": "NME", "own_cosine": "cos"}.get(q.sort[0]) if q.sort else None
        cells = []
        for row in result.rows:
            lines = [f"id {number(row.identity)} · {row.split or '–'}"]
            if label:
                lines.append(f"{label} {number(row.figure)}")
            cells.append(tile(row.image_id, token, lines, link=link))
        body.append(f'<div class="grid" id="grid">{"".join(cells)}</div>')
        if result.rows:
            body.append(pager)
    body.append("</section></div>")
    return layout("faces", "".join(body), catalog=catalog)


def _pager(result: Q.Grid) -> str:
    q = result.query
    parts = []
    if q.page > 1:
        parts.append(
            f'<a href="{esc(url("/", q.params(page=q.page - 1)))}" rel="prev">previous</a>'
        )
    if q.page < result.pages:
        parts.append(f'<a href="{esc(url("/", q.params(page=q.page + 1)))}" rel="next">next</a>')
    return f'<div class="pager">{"".join(parts)}</div>' if parts else ""


# --- one face -------------------------------------------------------------------------


def _overlay(f: Q.Face) -> str:
    w, h = f.width, f.height
    if not w or not h:
        return ""
    r = max(2.0, max(w, h) / 110)
    parts = [
        f'<svg class="overlay" id="overlay" viewBox="0 0 {int(w)} {int(h)}" '
        'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg" aria-hidden="true">'
    ]
    parts.append('<g id="layer-box" class="layer layer-box">')
    if f.bbox:
        x, y, bw, bh = f.bbox
        parts.append(
            f'<rect class="celeba" x="{x - 0.5}" y="{y - 0.5}" width="{bw}" height="{bh}" '
            'vector-effect="non-scaling-stroke"/>'
        )
    if f.snapshots:
        x1, y1, x2, y2 = f.snapshots[0][3]
        if None not in (x1, y1, x2, y2):
            parts.append(
                f'<rect class="face" x="{x1 - 0.5}" y="{y1 - 0.5}" width="{x2 - x1}" '
                f'height="{y2 - y1}" vector-effect="non-scaling-stroke"/>'
            )
    parts.append("</g>")
    parts.append('<g id="layer-truth" class="layer layer-truth">')
    for x, y in f.landmarks or []:
        parts.append(f'<circle cx="{x:.2f}" cy="{y:.2f}" r="{r:.2f}"/>')
    parts.append("</g>")
    parts.append('<g id="layer-pred" class="layer layer-pred pred-landmarks">')
    if f.predicted:
        for k, (x, y) in enumerate(f.predicted):
            if f.landmarks:
                tx, ty = f.landmarks[k]
                parts.append(
                    f'<line x1="{tx:.2f}" y1="{ty:.2f}" x2="{x:.2f}" y2="{y:.2f}" '
                    'vector-effect="non-scaling-stroke"/>'
                )
            parts.append(f'<circle class="pred" cx="{x:.2f}" cy="{y:.2f}" r="{r:.2f}"/>')
    parts.append("</g></svg>")
    return "".join(parts)


def face_page(
    *,
    catalog: str,
    f: Q.Face,
    token: str,
    run: str | None,
    emb: str | None,
    landmark_runs: Sequence[str],
    recognition_runs: Sequence[str],
    others: tuple[int, list[str]],
    near: Sequence[tuple[str, float, int | None, bool | None]],
    errors: Sequence[str] = (),
) -> str:
    context = [(k, v) for k, v in (("run", run), ("emb", emb)) if v]
    runs_form = (
        f'<form class="inline" method="get" action="{esc(face_url(f.image_id))}">'
        '<label>landmark run<select name="run" id="f-run">'
        + _options([("", "none")] + [(r, r) for r in landmark_runs], run or "")
        + '</select></label><label>embedding run<select name="emb" id="f-emb">'
        + _options([("", "none")] + [(r, r) for r in recognition_runs], emb or "")
        + '</select></label><button type="submit">Show</button></form>'
    )
    layers = (
        '<fieldset class="layers"><legend>layers</legend>'
        '<label><input type="checkbox" data-layer="layer-box" checked> face boxes</label>'
        '<label><input type="checkbox" data-layer="layer-truth" checked> true landmarks</label>'
        '<label><input type="checkbox" data-layer="layer-pred" id="toggle-pred" checked> '
        f"predicted landmarks{' (' + esc(run) + ')' if run else ''}</label></fieldset>"
    )
    stage = (
        f'<div><div class="stage"><img id="face-image" src="{esc(image_url(f.image_id))}" '
        f'alt="{esc(f.image_id)}"'
        + (f' width="{int(f.width)}" height="{int(f.height)}"' if f.width and f.height else "")
        + f">{_overlay(f)}</div>{layers}</div>"
    )
    rows: list[tuple[str, str]] = [
        ("image id", esc(f.image_id)),
        ("identity", esc(number(f.identity))),
        ("partition", esc(f.partition or "–")),
    ]
    for snap, split, label, box in f.snapshots:
        rows.append(
            (
                f"snapshot {esc(snap)}",
                f"split {esc(split)} · label {esc(number(label))} · face box "
                f"{esc(', '.join(number(v) for v in box))}",
            )
        )
    rows.append(("file", esc(f"{f.path or '–'} · {number(f.width)}x{number(f.height)} px")))
    if f.error:
        rows.append(("file error", esc(f.error)))
    if f.bbox:
        rows.append(("bbox (x_1, y_1, w, h)", esc(", ".join(str(v) for v in f.bbox))))
    if f.landmarks:
        rows.append(("landmarks", esc("  ".join(f"({x:g}, {y:g})" for x, y in f.landmarks))))
    if f.predicted:
        rows.append(
            (
                f"predicted ({esc(run)})",
                esc("  ".join(f"({x:.1f}, {y:.1f})" for x, y in f.predicted))
                + f" · NME {esc(number(f.nme))}",
            )
        )
    rows.append(("attributes true", esc(", ".join(f.attributes) or "none")))
    for check, severity, source, detail in f.problems:
        rows.append((f"problem ({esc(severity)})", esc(f"{check} [{source}] {detail or ''}")))
    table = (
        '<table class="rows" id="annotations">'
        + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        + "</table>"
    )
    n_others, other_ids = others
    parts = [
        f"<h1>{esc(f.image_id)}</h1>",
        error_box(errors),
        runs_form,
        f'<div class="face-view">{stage}{table}</div>',
    ]
    if f.identity is not None:
        everyone = url("/", [("snapshot", Q.WHOLE), ("identity", str(f.identity))])
        more = f" (first {len(other_ids)})" if n_others > len(other_ids) else ""
        parts.append(
            f"<h2>Identity {esc(f.identity)}: {n_others} other image"
            f"{'' if n_others == 1 else 's'}{more}</h2>"
            + tiles(other_ids, token, context)
            + f'<p><a href="{esc(everyone)}">all of them in the grid</a></p>'
        )
    if emb:
        cells = []
        for image_id, cosine, identity, same in near:
            verdict = "same person" if same else ("other person" if same is False else "?")
            cells.append(
                tile(
                    image_id,
                    token,
                    [f"cos {cosine:.3f}", f"id {number(identity)} · {verdict}"],
                    link=context,
                    cls="same" if same else "other",
                )
            )
        parts.append(
            f"<h2>Nearest neighbours by {esc(emb)}</h2>"
            + (f'<div class="grid" id="neighbours">{"".join(cells)}</div>' if cells else "")
            + ("" if cells else '<p class="note">The run has no embedding of this image.</p>')
        )
    return layout(f.image_id, "".join(parts), catalog=catalog)


# --- failures -------------------------------------------------------------------------


def failures_page(
    *,
    catalog: str,
    runs: Sequence[tuple[str, str, str]],
    run: str | None,
    split: str,
    top: int,
    result: Any,
    token: str,
    errors: Sequence[str],
) -> str:
    form = (
        '<form class="inline" method="get" action="/failures">'
        '<label>recognition run<select name="run" id="f-run">'
        + _options([(r, f"{r} ({s})" if s else r) for r, _, s in runs], run or "")
        + f'</select></label><label>split<input name="split" value="{esc(split)}" size="8">'
        f'</label><label>pairs<input name="top" value="{top}" size="4"></label>'
        '<button type="submit">Show</button></form>'
    )
    parts = ["<h1>Recognition failures</h1>", form, error_box(errors)]
    if not runs:
        parts.append('<p class="note">No recognition run has embeddings in this catalog.</p>')
    if result is not None:
        link = [("emb", result.run_id)]
        threshold = number(result.threshold) if result.threshold is not None else "none"
        parts.append(
            f'<p class="note">Run {esc(result.run_id)} on {esc(result.snapshot)}/'
            f"{esc(result.split)}: {result.images} images of {result.identities} people; "
            f"threshold {esc(threshold)} ({esc(result.threshold_source)}).</p>"
        )

        def pairs(title: str, items: Sequence[Any], element: str) -> str:
            cells = "".join(
                '<div class="pair"><div class="faces">'
                + "".join(
                    f'<a href="{esc(face_url(i, link))}" title="{esc(i)}">'
                    f'<img src="{esc(thumb_url(i, token))}" alt="{esc(i)}" width="96" '
                    'height="96" loading="lazy"></a>'
                    for i in (p.image_a, p.image_b)
                )
                + f"</div>cos {p.cosine:.3f} · id {esc(p.identity_a)} / {esc(p.identity_b)}</div>"
                for p in items
            )
            return f'<h2>{esc(title)}</h2><div class="pairs" id="{element}">{cells}</div>'

        parts.append(
            pairs("False non-matches (same person, lowest cosine)", result.false_non_matches, "fnm")
        )
        parts.append(
            pairs("False matches (two people, highest cosine)", result.false_matches, "fm")
        )
        cells = "".join(
            '<div class="pair"><div class="faces">'
            + "".join(
                f'<a href="{esc(face_url(i, link))}" title="{esc(i)}">'
                f'<img src="{esc(thumb_url(i, token))}" alt="{esc(i)}" width="96" height="96" '
                'loading="lazy"></a>'
                for i in (c.closest.image_a, c.closest.image_b)
            )
            + f"</div>ids {esc(c.identity_a)} / {esc(c.identity_b)} · centres cos "
            f"{c.centre_cosine:.3f}<br>{c.above_threshold} of {c.pairs} pairs above · closest "
            f"{c.closest.cosine:.3f}</div>"
            for c in result.confused
        )
        parts.append(
            f'<h2>Confused identities (closest centres)</h2><div class="pairs" id="confused">'
            f"{cells}</div>"
        )
    return layout("failures", "".join(parts), catalog=catalog)


# --- SQL ------------------------------------------------------------------------------

SQL_ROWS = 500


def sql_page(
    *,
    catalog: str,
    query: str,
    results: Sequence[Any],
    error: str | None,
    token: str,
    known_ids: set[str],
) -> str:
    parts = [
        "<h1>SQL</h1>",
        '<p class="note">Read-only: the same sandbox as <code>celebcat sql</code> (the '
        "catalog and nothing else: no writes, files, network or extensions).</p>",
        '<form method="get" action="/sql" id="sql-form">'
        f'<textarea name="q" id="sql-query" spellcheck="false">{esc(query)}</textarea>'
        '<div><button type="submit" id="sql-run">Run</button></div></form>',
    ]
    if error:
        parts.append(error_box([error], "sql-error"))
    for k, result in enumerate(results):
        if not result.columns:
            continue
        shown = result.rows[:SQL_ROWS]
        element = "sql-result" if k == len(results) - 1 else f"sql-result-{k}"
        more = f" (first {SQL_ROWS} shown)" if len(result.rows) > SQL_ROWS else ""
        parts.append(
            f"<h2>{len(result.rows):,} row{'' if len(result.rows) == 1 else 's'}{more}</h2>"
            f'<div class="scroll"><table class="result" id="{element}">'
            "<thead><tr>"
            + "".join(f"<th>{esc(c)}</th>" for c in result.columns)
            + "</tr></thead><tbody>"
            + "".join(
                "<tr>" + "".join(f"<td>{esc(_cell(v))}</td>" for v in row) + "</tr>"
                for row in shown
            )
            + "</tbody></table></div>"
        )
        if "image_id" in result.columns:
            col = result.columns.index("image_id")
            ids = []
            for row in result.rows:
                value = row[col]
                if isinstance(value, str) and value in known_ids and value not in ids:
                    ids.append(value)
                if len(ids) >= Q.PAGE_SIZE:
                    break
            if ids:
                parts.append(f'<h2>Faces (first {len(ids)})</h2><div id="sql-faces">')
                parts.append(tiles(ids, token) + "</div>")
    return layout("SQL", "".join(parts), catalog=catalog)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > 12:
        return "[" + ", ".join(_cell(v) for v in value[:12]) + f", … ({len(value)} values)]"
    text = str(value)
    return text if len(text) <= 2000 else text[:2000] + "…"


# --- galleries ------------------------------------------------------------------------


def galleries_page(*, catalog: str, galleries: Sequence[Any]) -> str:
    rows = "".join(
        f'<tr><td><a href="{esc("/galleries/" + quote(g.name, safe=""))}">{esc(g.name)}</a></td>'
        f"<td>{esc(g.run_id)}</td><td>{esc(g.source)}</td><td>{g.n_identities}</td>"
        f"<td>{g.n_images}</td><td>{esc(g.crops or '')}</td></tr>"
        for g in galleries
    )
    body = "<h1>Galleries</h1>" + (
        '<table class="rows"><tr><th>name</th><th>run</th><th>source</th><th>people</th>'
        f"<th>images</th><th>crops</th></tr>{rows}</table>"
        if galleries
        else '<p class="note">No galleries (celebcat gallery add).</p>'
    )
    return layout("galleries", body, catalog=catalog)


def gallery_page(
    *,
    catalog: str,
    gallery: Any,
    people: Sequence[tuple[str, list[str]]],
    token: str,
    known_ids: set[str],
) -> str:
    parts = [
        f"<h1>Gallery {esc(gallery.name)}</h1>",
        f'<p class="note">run {esc(gallery.run_id)} · {esc(gallery.source)} · '
        f"{gallery.n_identities} people, {gallery.n_images} images</p>",
    ]
    for name, images in people:
        shown = [i for i in images if i in known_ids]
        files = [i for i in images if i not in known_ids]
        parts.append(f'<h2 class="person">{esc(name)}</h2>')
        if shown:
            parts.append(tiles(shown, token))
        if files:  # photos outside the catalog: named, never served
            parts.append(
                '<ul class="files">' + "".join(f"<li>{esc(p)}</li>" for p in files) + "</ul>"
            )
    return layout(f"gallery {gallery.name}", "".join(parts), catalog=catalog)


def message_page(catalog: str, title: str, messages: Sequence[str]) -> str:
    return layout(title, f"<h1>{esc(title)}</h1>{error_box(messages)}", catalog=catalog)
