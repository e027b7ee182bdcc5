// beto-search page: plain DOM, no framework, no build step, no other origin.
// Every text from the index is inserted with textContent; the only markup made is <mark>.
"use strict";

const PAGE_SIZE = 10;
const MAX_RESULTS = 100;
const MODE_NAMES = { hybrid: "híbrida", semantic: "semántica", lexical: "léxica" };
const $ = (id) => document.getElementById(id);
const state = { q: "", mode: "hybrid", page: 1, filters: {}, doc: null, at: null };
let searchSeq = 0;
let debounce = null;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// text with the highlight spans (document offsets; the text starts at `base`) wrapped in <mark>
function marked(text, base, spans, cls) {
  const frag = document.createDocumentFragment();
  let pos = 0;
  for (const [s, e] of spans || []) {
    const a = s - base, b = e - base;
    if (a < pos || b > text.length || a >= b) continue;
    frag.append(document.createTextNode(text.slice(pos, a)));
    frag.append(el("mark", { text: text.slice(a, b), ...(cls ? { class: cls } : {}) }));
    pos = b;
  }
  frag.append(document.createTextNode(text.slice(pos)));
  return frag;
}

// ----- URL <-> state -----
function readUrl() {
  const p = new URLSearchParams(location.search);
  state.q = p.get("q") || "";
  state.mode = MODE_NAMES[p.get("mode")] ? p.get("mode") : "hybrid";
  state.page = Math.max(1, parseInt(p.get("page") || "1", 10) || 1);
  state.filters = {};
  for (const f of p.getAll("f")) {
    const i = f.indexOf(":");
    if (i > 0) state.filters[f.slice(0, i)] = f.slice(i + 1);
  }
  state.doc = p.get("doc");
  state.at = p.get("at");
}

function urlFor(s) {
  const p = new URLSearchParams();
  if (s.q) p.set("q", s.q);
  if (s.mode !== "hybrid") p.set("mode", s.mode);
  if (s.page > 1) p.set("page", String(s.page));
  for (const [k, v] of Object.entries(s.filters)) p.append("f", `${k}:${v}`);
  if (s.doc) p.set("doc", s.doc);
  if (s.doc && s.at) p.set("at", s.at);
  const qs = p.toString();
  return qs ? `/?${qs}` : "/";
}

function writeUrl(push) {
  const url = urlFor(state);
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

// ----- API -----
async function api(path) {
  const headers = {};
  const key = sessionStorage.getItem("beto-search-key");
  if (key) headers.Authorization = `Bearer ${key}`;
  const res = await fetch(path, { headers });
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (res.status === 401) {
    $("key-box").hidden = false;
    $("key").focus();
  }
  if (!res.ok) throw new Error((body && body.error) || `Error ${res.status}`);
  return body;
}

// ----- search -----
async function search() {
  const seq = ++searchSeq;
  const status = $("status");
  if (!state.q.trim()) {
    $("results").replaceChildren();
    $("pager").replaceChildren();
    status.textContent = "Escribe para buscar.";
    renderActiveFilters();
    return;
  }
  const p = new URLSearchParams({ q: state.q, mode: state.mode, k: String(PAGE_SIZE),
                                  offset: String((state.page - 1) * PAGE_SIZE) });
  for (const [k, v] of Object.entries(state.filters)) p.append("where", `${k}:${v}`);
  status.textContent = "Buscando…";
  try {
    const data = await api(`/api/search?${p}`);
    if (seq !== searchSeq) return; // a newer search already answered
    renderResults(data.results);
  } catch (err) {
    if (seq !== searchSeq) return;
    $("results").replaceChildren();
    $("pager").replaceChildren();
    status.textContent = err.message;
  }
  renderActiveFilters();
}

// where a hit's passage is: "p. 12", "pp. 3–4", "§ Capítulo 1 › Artículo 2" (issue 17)
function whereInDocument(r) {
  const parts = [];
  if (r.page) parts.push(`p. ${r.page}`);
  else if (r.pages && r.pages.length) parts.push(`pp. ${r.pages[0]}–${r.pages[r.pages.length - 1]}`);
  if (r.section) parts.push(`§ ${r.section}`);
  return parts.join(", ");
}

function renderResults(results) {
  const list = $("results");
  list.replaceChildren();
  const from = (state.page - 1) * PAGE_SIZE;
  $("status").textContent = results.length
    ? `Resultados ${from + 1}–${from + results.length} · búsqueda ${MODE_NAMES[state.mode]}`
    : "Sin resultados.";
  for (const r of results) {
    const at = `${r.snippet.start}-${r.snippet.end}`;
    const link = el("a", { class: "result-title", href: urlFor({ ...state, doc: r.doc_id, at }),
                           text: r.title || r.doc_id, "data-doc": r.doc_id });
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      openDoc(r.doc_id, at, true);
    });
    const meta = el("p", { class: "meta" });
    meta.append(el("span", { text: r.source || r.doc_id }));
    const where = whereInDocument(r);
    if (where) meta.append(" ", el("span", { class: "where", text: where }));
    for (const [k, v] of Object.entries(r.metadata || {})) {
      if (v !== null && typeof v !== "object") meta.append(" ", el("span", { class: "tag", text: `${k}: ${v}` }));
    }
    const snippet = el("p", { class: "snippet" });
    snippet.append(marked(r.snippet.text, r.snippet.start, r.highlight_spans));
    list.append(el("li", { "data-rank": String(r.rank) }, link, meta, snippet));
  }
  renderPager(results.length);
}

function renderPager(n) {
  const pager = $("pager");
  pager.replaceChildren();
  if (state.page === 1 && n < PAGE_SIZE) return;
  const prev = el("button", { type: "button", text: "← Anterior", onclick: () => goPage(state.page - 1) });
  prev.disabled = state.page <= 1;
  const next = el("button", { type: "button", text: "Siguiente →", onclick: () => goPage(state.page + 1) });
  next.disabled = n < PAGE_SIZE || state.page * PAGE_SIZE >= MAX_RESULTS;
  pager.append(prev, el("span", { text: `Página ${state.page}` }), next);
}

function goPage(page) {
  state.page = page;
  writeUrl(true);
  search().then(() => $("results").focus());
}

// ----- facets -----
async function loadFacets() {
  let data;
  try { data = await api("/api/facets?limit=8"); } catch (e) { return; }
  const box = $("facets");
  box.replaceChildren();
  for (const [field, values] of Object.entries(data.facets)) {
    // a field whose values are (nearly) all unique (an author, a date) does not help to filter
    if (values.filter((v) => v.count >= 2).length < 2) continue;
    const list = el("ul");
    for (const { value, count } of values) {
      const val = String(value);
      const on = state.filters[field] === val;
      const btn = el("button", { type: "button", class: "facet", "aria-pressed": String(on),
                                 "data-field": field, "data-value": val },
                     el("span", { text: val }), el("span", { class: "count", text: String(count) }));
      btn.addEventListener("click", () => toggleFilter(field, val));
      list.append(el("li", {}, btn));
    }
    box.append(el("h3", { text: field }), list);
  }
}

function toggleFilter(field, value) {
  if (state.filters[field] === value) delete state.filters[field];
  else state.filters[field] = value;
  state.page = 1;
  for (const b of document.querySelectorAll(".facet")) {
    b.setAttribute("aria-pressed", String(state.filters[b.dataset.field] === b.dataset.value));
  }
  writeUrl(true);
  search();
}

function renderActiveFilters() {
  const box = $("active-filters");
  box.replaceChildren();
  for (const [k, v] of Object.entries(state.filters)) {
    box.append(el("button", { type: "button", text: `${k}: ${v} ✕`, "aria-label": `Quitar el filtro ${k}: ${v}`,
                              onclick: () => toggleFilter(k, v) }));
  }
}

// ----- the document view -----
async function openDoc(id, at, push) {
  state.doc = id;
  state.at = at;
  if (push) writeUrl(true);
  const view = $("doc");
  let doc;
  try {
    doc = await api(`/api/documents/${encodeURIComponent(id)}`);
  } catch (err) {
    $("status").textContent = err.message;
    return;
  }
  $("doc-title").textContent = doc.title || doc.id;
  const meta = $("doc-meta");
  meta.replaceChildren(el("span", { text: doc.source || doc.id }));
  for (const [k, v] of Object.entries(doc.metadata || {})) {
    if (v !== null && typeof v !== "object") meta.append(" ", el("span", { class: "tag", text: `${k}: ${v}` }));
  }
  const [s, e] = (at || "").split("-").map((x) => parseInt(x, 10));
  const spans = Number.isInteger(s) && Number.isInteger(e) ? [[s, e]] : [];
  $("doc-text").replaceChildren(marked(doc.text, 0, spans, "passage"));
  view.hidden = false;
  document.querySelector("main").classList.add("with-doc");
  const passage = view.querySelector("mark.passage");
  if (getComputedStyle(view).overflowY === "auto") {
    // side panel (wide screens): scroll the panel only, the results stay where they were
    view.scrollTop = passage ? Math.max(0, passage.offsetTop - view.clientHeight / 3) : 0;
  } else if (passage) {
    passage.scrollIntoView({ block: "center" });
  }
  view.focus({ preventScroll: true });
  const sim = $("similar");
  sim.replaceChildren(el("li", { text: "Buscando…" }));
  try {
    const data = await api(`/api/similar/${encodeURIComponent(id)}?k=5`);
    sim.replaceChildren();
    for (const r of data.results) {
      const at2 = `${r.start}-${r.end}`;
      const a = el("a", { href: urlFor({ ...state, doc: r.doc_id, at: at2 }), text: r.title || r.doc_id });
      a.addEventListener("click", (ev) => { ev.preventDefault(); openDoc(r.doc_id, at2, true); });
      sim.append(el("li", {}, a));
    }
    if (!data.results.length) sim.replaceChildren(el("li", { text: "Ninguno." }));
  } catch (err) {
    sim.replaceChildren(el("li", { text: err.message }));
  }
}

function closeDoc(push) {
  state.doc = null;
  state.at = null;
  $("doc").hidden = true;
  document.querySelector("main").classList.remove("with-doc");
  if (push) writeUrl(true);
  const link = document.querySelector("#results a.result-title");
  if (link) link.focus();
  else $("q").focus();
}

// ----- wiring -----
function syncForm() {
  $("q").value = state.q;
  for (const r of document.querySelectorAll('input[name="mode"]')) r.checked = r.value === state.mode;
}

function restore() {
  readUrl();
  syncForm();
  search();
  if (state.doc) openDoc(state.doc, state.at, false);
  else if (!$("doc").hidden) closeDoc(false);
}

document.addEventListener("DOMContentLoaded", () => {
  $("q").addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      state.q = $("q").value;
      state.page = 1;
      writeUrl(false);
      search();
    }, 250);
  });
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearTimeout(debounce);
    state.q = $("q").value;
    state.page = 1;
    writeUrl(true);
    search();
  });
  for (const r of document.querySelectorAll('input[name="mode"]')) {
    r.addEventListener("change", () => {
      state.mode = r.value;
      state.page = 1;
      writeUrl(true);
      search();
    });
  }
  $("doc-close").addEventListener("click", () => closeDoc(true));
  $("key-box").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("beto-search-key", $("key").value);
    $("key-box").hidden = true;
    loadFacets();
    restore();
  });
  document.addEventListener("keydown", (ev) => {
    const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (ev.key === "/" && !typing) {
      ev.preventDefault();
      $("q").focus();
      $("q").select();
    } else if (ev.key === "Escape" && !$("doc").hidden) {
      closeDoc(true);
    }
  });
  window.addEventListener("popstate", restore);
  loadFacets();
  restore();
});
