"""The browser's style sheet (inlined in every page) and its few lines of script
(``/static/app.js``, a file of its own so the pages' Content-Security-Policy can
refuse every inline script), and the icon. Nothing is fetched from elsewhere."""

from __future__ import annotations

CSS = """
:root { --fg: #1d1d1f; --muted: #6e6e73; --line: #d2d2d7; --bg: #fafafa; --accent: #0a66c2; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1.2em; align-items: baseline; padding: .6em 1em;
  border-bottom: 1px solid var(--line); background: #fff; }
header .brand { font-weight: 700; color: var(--fg); text-decoration: none; }
header nav a { margin-right: .9em; }
header .db { margin-left: auto; color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
a { color: var(--accent); }
main { padding: 1em; }
h1 { font-size: 20px; margin: 0 0 .5em; overflow-wrap: anywhere; }
h2 { font-size: 16px; margin: 1.2em 0 .5em; }
.layout { display: flex; gap: 1em; align-items: flex-start; }
aside { flex: 0 0 250px; background: #fff; border: 1px solid var(--line); padding: .8em;
  border-radius: 6px; position: sticky; top: .5em; max-height: calc(100vh - 1em); overflow: auto; }
aside label { display: block; margin: .4em 0 .1em; color: var(--muted); font-size: 12px; }
aside select, aside input { width: 100%; }
aside .attrs { display: grid; grid-template-columns: 1fr 64px; gap: 2px 6px; align-items: center; }
aside .attrs label { margin: 0; font-size: 11px; overflow-wrap: anywhere; }
aside .buttons { margin-top: .8em; display: flex; gap: .6em; align-items: center; }
section.content { flex: 1; min-width: 0; }
.count { margin: 0 0 .6em; }
.count strong { font-size: 18px; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; }
.tile { display: flex; flex-direction: column; width: 116px; font-size: 11px; color: var(--fg);
  text-decoration: none; background: #fff; border: 1px solid var(--line); border-radius: 4px;
  padding: 3px; overflow: hidden; }
.tile img { width: 108px; height: 108px; object-fit: cover; background: #ddd; }
.tile span { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.tile .fig { color: var(--muted); }
.tile.same { border-color: #2e7d32; }
.tile.other { border-color: #c62828; }
.pager { margin: .6em 0; display: flex; gap: .8em; align-items: center; }
.error { color: #b00020; background: #fdecea; border: 1px solid #f5c2c7; padding: .5em .7em;
  border-radius: 4px; white-space: pre-wrap; overflow-wrap: anywhere; }
.note { color: var(--muted); }
.face-view { display: flex; gap: 1.2em; flex-wrap: wrap; align-items: flex-start; }
.stage { position: relative; display: inline-block; width: min(100%, 560px); line-height: 0; }
.stage img { display: block; width: 100%; height: auto; }
.stage svg { position: absolute; left: 0; top: 0; width: 100%; height: 100%;
  pointer-events: none; }
.layer-box rect { fill: none; stroke: #ffd600; stroke-width: 2; }
.layer-box rect.celeba { stroke: #00b0ff; stroke-dasharray: 4 3; }
.layer-truth circle { fill: #00e676; stroke: #003d1a; stroke-width: 1; }
.layer-pred circle { fill: #ff1744; stroke: #4a0010; stroke-width: 1; }
.layer-pred line { stroke: #ff1744; stroke-width: 1.5; }
.layers label { margin-right: 1em; }
table.rows, table.result { border-collapse: collapse; background: #fff; }
table.rows th, table.rows td, table.result th, table.result td { border: 1px solid var(--line);
  padding: 3px 7px; text-align: left; vertical-align: top; font-size: 12px; }
table.rows th { color: var(--muted); font-weight: 500; }
table.result td { font-family: ui-monospace, monospace; white-space: pre-wrap; }
.scroll { overflow: auto; max-width: 100%; }
.pairs { display: flex; flex-wrap: wrap; gap: 10px; }
.pair { background: #fff; border: 1px solid var(--line); border-radius: 4px; padding: 4px;
  font-size: 11px; }
.pair .faces { display: flex; gap: 3px; }
.pair img { width: 96px; height: 96px; display: block; }
textarea { width: 100%; min-height: 7em; font-family: ui-monospace, monospace; font-size: 13px; }
form.inline { display: flex; gap: .6em; flex-wrap: wrap; align-items: end; margin-bottom: 1em; }
form.inline label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
"""

JS = """// celebcat serve: toggle the face page's layers; keep empty filters out of the URL.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const box of document.querySelectorAll("input[data-layer]")) {
    const show = () => {
      const layer = document.getElementById(box.dataset.layer);
      if (layer) layer.style.display = box.checked ? "" : "none";
    };
    box.addEventListener("change", show);
    show();
  }
  for (const form of document.querySelectorAll("form.filters")) {
    form.addEventListener("submit", () => {
      for (const el of form.elements) if (el.name && !el.value) el.disabled = true;
    });
  }
});
window.addEventListener("pageshow", () => {
  for (const el of document.querySelectorAll("form.filters [disabled]")) el.disabled = false;
});
"""

ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#0a66c2"/>'
    '<circle cx="8" cy="7" r="4" fill="#fff"/><rect x="3" y="12" width="10" height="3" '
    'rx="1.5" fill="#fff"/></svg>'
)

__all__ = ["CSS", "ICON", "JS"]
