// ragline web UI: plain ES module, no build step. Every value from the server is inserted as
// text (never as HTML): chunk text and answers are untrusted.

const $ = (selector) => document.querySelector(selector);
const store = window.sessionStorage;

/** Milliseconds since the epoch of an API time: UTC, with or without its offset written. */
function utc(time) {
  return Date.parse(/(Z|[+-]\d\d:\d\d)$/.test(time) ? time : `${time}Z`);
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    // through the CSSOM: the Content-Security-Policy refuses style attributes (no inline styles)
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const sessionId = store.getItem("ragline.session") || crypto.randomUUID();
store.setItem("ragline.session", sessionId);

// --- API ------------------------------------------------------------------------------------

function headers(extra = {}) {
  const key = store.getItem("ragline.key");
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (response.status === 401) {
    askForKey();
    throw new Error("an API key is required");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      message = body.error?.message || body.detail?.[0]?.msg || body.detail || message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response.status === 204 ? null : response.json();
}

function askForKey() {
  const dialog = $("#key-dialog");
  if (!dialog.open) dialog.showModal();
}

$("#key-button").addEventListener("click", askForKey);
$("#key-dialog").addEventListener("close", () => {
  if ($("#key-dialog").returnValue === "save") {
    store.setItem("ragline.key", $("#key-input").value.trim());
    loadCollections();
    show(currentPage());
  }
});

// --- navigation -----------------------------------------------------------------------------

const pages = { ask: () => {}, documents: loadDocuments, traces: loadTraces, evals: loadRuns };

function currentPage() {
  const name = location.hash.replace("#", "").split("/")[0];
  return name in pages ? name : "ask";
}

function show(name) {
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${name}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === name);
  pages[name]().catch(showError);
}

function showError(error) {
  const box = $("#ask-error");
  box.textContent = error.message;
  box.hidden = false;
}

window.addEventListener("hashchange", () => show(currentPage()));

function collection() {
  return $("#collection").value || "default";
}

async function loadCollections() {
  const collections = await api("/v1/collections");
  const select = $("#collection");
  const chosen = select.value || store.getItem("ragline.collection");
  select.replaceChildren(...collections.map((c) => el("option", { value: c.name }, `${c.name} (${c.documents})`)));
  if (!collections.length) select.append(el("option", { value: "default" }, "default"));
  if (chosen && [...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

$("#collection").addEventListener("change", () => {
  store.setItem("ragline.collection", collection());
  if (currentPage() === "documents") loadDocuments().catch(showError);
});

// --- Ask ------------------------------------------------------------------------------------

let lastTrace = null;

$("#ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = $("#question").value.trim();
  if (!question) return;
  $("#ask-error").hidden = true;
  $("#ask-button").disabled = true;
  $("#answer-box").hidden = false;
  $("#answer").replaceChildren();
  $("#answer-meta").textContent = "retrieving…";
  $("#sources").replaceChildren();
  $("#feedback-status").textContent = "";
  for (const button of document.querySelectorAll("#feedback button")) button.disabled = true;
  try {
    await streamAnswer(question);
  } catch (error) {
    showError(error);
  } finally {
    $("#ask-button").disabled = false;
  }
});

async function streamAnswer(question) {
  const response = await fetch("/v1/query", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ question, collection: collection(), mode: $("#mode").value, stream: true, session_id: sessionId }),
  });
  if (response.status === 401) { askForKey(); throw new Error("an API key is required"); }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error?.message || `${response.status} ${response.statusText}`);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let boundary;
    while ((boundary = buffer.indexOf("\n\n")) >= 0) {
      const raw = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      const name = /^event: (.*)$/m.exec(raw)?.[1];
      const data = JSON.parse(/^data: (.*)$/m.exec(raw)?.[1] || "{}");
      if (name === "retrieval") {
        renderSources(data.context, []);
        $("#answer-meta").textContent = `${data.context.length} passages · generating…`;
      } else if (name === "token") {
        text += data.text;
        $("#answer").textContent = text;
      } else if (name === "done") {
        renderAnswer(data);
      } else if (name === "error") {
        throw new Error(data.message);
      }
    }
  }
}

function renderAnswer(body) {
  lastTrace = body.trace_id;
  const answer = $("#answer");
  answer.replaceChildren();
  const parts = body.answer.split(/(\[\d+\])/);
  for (const part of parts) {
    const match = /^\[(\d+)\]$/.exec(part);
    if (match) {
      answer.append(el("span", { class: "citation", "data-n": match[1], onclick: () => openSource(match[1]) }, `[${match[1]}]`));
    } else {
      answer.append(part);
    }
  }
  const cited = new Set(body.citations.map((c) => c.n));
  renderSources(body.context, cited);
  const timings = body.timings_ms || {};
  $("#answer-meta").textContent = [
    `finish: ${body.finish_reason}`,
    `${body.citations.length} citation(s)`,
    timings.time_to_first_token !== undefined ? `first token ${Math.round(timings.time_to_first_token)} ms` : null,
    timings.total !== undefined ? `total ${Math.round(timings.total)} ms` : null,
    body.cache?.answer ? "cached" : null,
    `trace ${body.trace_id}`,
  ].filter(Boolean).join(" · ");
  for (const button of document.querySelectorAll("#feedback button")) button.disabled = !body.trace_id;
}

function renderSources(context, cited) {
  $("#sources").replaceChildren(...context.map((c) => el("li", { id: `source-${c.n}`, class: cited.has?.(c.n) ? "cited" : "" },
    el("details", {},
      el("summary", {}, `[${c.n}] ${c.source}`, el("span", { class: "meta" }, ` · score ${Number(c.score).toFixed(4)}`, cited.has?.(c.n) ? " · cited" : "")),
      el("div", {}, c.text)))));
}

function openSource(n) {
  const item = document.getElementById(`source-${n}`);
  if (!item) return;
  item.querySelector("details").open = true;
  item.classList.add("flash");
  item.scrollIntoView({ block: "nearest" });
  setTimeout(() => item.classList.remove("flash"), 1200);
}

for (const button of document.querySelectorAll("#feedback button")) {
  button.addEventListener("click", async () => {
    if (!lastTrace) return;
    const comment = $("#feedback-comment").value.trim();
    try {
      await api("/v1/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ trace_id: lastTrace, value: Number(button.dataset.value), comment: comment || null }),
      });
      $("#feedback-status").textContent = `feedback recorded on trace ${lastTrace}`;
      for (const other of document.querySelectorAll("#feedback button")) other.disabled = true;
    } catch (error) {
      $("#feedback-status").textContent = `feedback failed: ${error.message}`;
    }
  });
}

// --- Documents ------------------------------------------------------------------------------

let documentsTimer = null;

async function loadDocuments() {
  clearTimeout(documentsTimer);
  await loadCollections();
  const name = collection();
  $("#upload-collection").placeholder = name;
  const documents = await api(`/v1/collections/${encodeURIComponent(name)}/documents`).catch(() => []);
  $("#documents-table tbody").replaceChildren(...documents.map((d) => el("tr", { "data-source": d.source },
    el("td", {}, d.source),
    el("td", { class: `status-${d.status}` }, d.status),
    el("td", {}, d.chunk_count),
    el("td", {}, new Date(utc(d.updated_at)).toLocaleTimeString()),
    el("td", { class: "error" }, d.error || ""),
    el("td", {}, el("button", { type: "button", onclick: () => removeDocument(d) }, "delete")))));
  if (documents.some((d) => d.status === "queued" || d.status === "processing") && currentPage() === "documents") {
    documentsTimer = setTimeout(() => loadDocuments().catch(showError), 1000);
  }
}

async function removeDocument(document_) {
  if (!confirm(`Delete ${document_.source}?`)) return;
  await api(`/v1/documents/${document_.document_id}`, { method: "DELETE" });
  await loadDocuments();
}

async function upload(files) {
  if (!files.length) return;
  const target = $("#upload-collection").value.trim() || collection();
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  $("#upload-status").textContent = `uploading ${files.length} file(s) to ${target}…`;
  try {
    const body = await api(`/v1/collections/${encodeURIComponent(target)}/documents`, { method: "POST", body: form });
    const queued = body.documents.filter((d) => d.job_id).length;
    $("#upload-status").textContent = `${body.documents.length} file(s) accepted, ${queued} queued for ingestion`;
    store.setItem("ragline.collection", target);
    await loadCollections();
    $("#collection").value = target;
    await loadDocuments();
  } catch (error) {
    $("#upload-status").textContent = `upload failed: ${error.message}`;
  }
}

const dropzone = $("#dropzone");
dropzone.addEventListener("dragover", (event) => { event.preventDefault(); dropzone.classList.add("over"); });
dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropzone.classList.remove("over");
  upload([...event.dataTransfer.files]);
});
$("#file-input").addEventListener("change", (event) => upload([...event.target.files]));

// --- Traces ---------------------------------------------------------------------------------

$("#trace-filters").addEventListener("submit", (event) => { event.preventDefault(); loadTraces().catch(showError); });

async function loadTraces() {
  const query = new URLSearchParams({ limit: "50" });
  if ($("#filter-errors").checked) query.set("errors", "true");
  if ($("#filter-session").value.trim()) query.set("session_id", $("#filter-session").value.trim());
  let traces = await api(`/v1/traces?${query}`);
  if ($("#filter-negative").checked) traces = traces.filter((t) => t.feedback !== null && t.feedback <= 0);
  $("#traces-table tbody").replaceChildren(...traces.map((t) => el("tr", { class: "clickable", "data-trace": t.trace_id, onclick: () => openTrace(t.trace_id) },
    el("td", {}, new Date(utc(t.start_time)).toLocaleTimeString()),
    el("td", {}, t.name),
    el("td", {}, Math.round(t.duration_ms)),
    el("td", { class: `status-${t.status}` }, t.status),
    el("td", {}, t.feedback === null ? "" : t.feedback),
    el("td", {}, (t.input || "").slice(0, 80)))));
  const wanted = location.hash.split("/")[1];
  if (wanted) await openTrace(wanted);
}

function flatten(nodes, depth = 0, out = []) {
  for (const node of nodes) {
    out.push({ ...node, depth });
    flatten(node.children || [], depth + 1, out);
  }
  return out;
}

async function openTrace(traceId) {
  const trace = await api(`/v1/traces/${traceId}`);
  const spans = flatten(trace.spans);
  const start = Math.min(...spans.map((s) => utc(s.start_time)));
  const end = Math.max(...spans.map((s) => utc(s.start_time) + s.duration_ms));
  const total = Math.max(end - start, 1);
  $("#trace-detail").hidden = false;
  const feedback = trace.feedback.map((f) => `${f.name}=${f.value}${f.comment ? ` (“${f.comment}”)` : ""}`).join(", ");
  $("#trace-title").textContent = `trace ${traceId}${feedback ? ` · feedback ${feedback}` : ""}`;
  $("#waterfall").replaceChildren(...spans.map((span) => {
    const left = ((utc(span.start_time) - start) / total) * 100;
    const width = (span.duration_ms / total) * 100;
    const row = el("div", { class: "span-row", "data-span": span.name, onclick: () => selectSpan(row, span) },
      el("span", { style: `padding-left:${span.depth * 14}px` }, span.name),
      el("div", { class: "span-track" }, el("div", { class: `span-bar${span.status === "ERROR" ? " error" : ""}`, style: `left:${left}%;width:${width}%` })),
      el("span", { class: "meta" }, `${span.duration_ms.toFixed(1)} ms`));
    return row;
  }));
  selectSpan($("#waterfall .span-row"), spans[0]);
  const diagnosis = await api(`/v1/traces/${traceId}/diagnosis`);
  $("#diagnosis").replaceChildren(...(diagnosis.findings.length ? diagnosis.findings.map((f) => el("li", {},
    el("strong", { class: `sev-${f.severity}` }, `${f.severity} ${f.rule}`), `: ${f.summary}`,
    el("div", { class: "meta" }, `fix: ${f.fix}`))) : [el("li", {}, "no problem found")]));
}

const KEY_ATTRIBUTES = [
  "openinference.span.kind", "ragline.collection", "session.id", "input.value", "output.value",
  "embedding.model_name", "ragline.retrieval.top_k", "ragline.retrieval.hits", "ragline.retrieval.leg_hits",
  "llm.model_name", "llm.token_count.prompt", "llm.token_count.completion", "ragline.llm.time_to_first_token_ms",
  "ragline.llm.finish_reason", "ragline.prompt.context_tokens", "ragline.prompt.context_utilisation",
  "langfuse.observation.prompt.name", "langfuse.observation.prompt.version",
];

function selectSpan(row, span) {
  for (const other of document.querySelectorAll(".span-row")) other.classList.remove("selected");
  row?.classList.add("selected");
  const attributes = span.attributes || {};
  const keys = Object.keys(attributes).filter((k) => KEY_ATTRIBUTES.includes(k) || k.startsWith("retrieval.documents."));
  const lines = keys.sort().map((k) => `${k}: ${typeof attributes[k] === "string" ? attributes[k] : JSON.stringify(attributes[k])}`);
  $("#span-detail").replaceChildren(
    el("h3", {}, `${span.name} · ${span.duration_ms.toFixed(1)} ms · ${span.status}${span.status_message ? ` (${span.status_message})` : ""}`),
    el("pre", {}, lines.join("\n") || "(no key attributes)"));
}

// --- Evals ----------------------------------------------------------------------------------

const HEADLINE = ["ndcg@10", "recall@10", "token_f1", "faithfulness"];

async function loadRuns() {
  const runs = await api("/v1/evals/runs");
  $("#runs-table tbody").replaceChildren(...runs.map((r) => {
    const metrics = r.summary.metrics || {};
    const headline = HEADLINE.filter((m) => m in metrics).map((m) => `${m} ${metrics[m].toFixed(3)}`).join(" · ");
    return el("tr", {}, el("td", {}, r.name), el("td", {}, r.dataset), el("td", {}, r.mode), el("td", {}, r.config_hash),
      el("td", {}, r.summary.items ?? ""), el("td", {}, headline), el("td", {}, new Date(utc(r.created_at)).toLocaleString()));
  }));
  for (const [id, offset] of [["#baseline", 2], ["#candidate", 1]]) {
    const select = $(id);
    select.replaceChildren(...runs.map((r) => el("option", { value: r.name }, r.name)));
    if (runs.length >= offset) select.value = runs[runs.length - offset].name;
  }
}

$("#compare-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = new URLSearchParams({ baseline: $("#baseline").value, candidate: $("#candidate").value });
  const body = await api(`/v1/evals/compare?${query}`).catch((error) => { showError(error); return null; });
  if (!body) return;
  $("#compare-table").hidden = false;
  $("#compare-table tbody").replaceChildren(...body.metrics.map((m) => el("tr", { "data-metric": m.metric },
    el("td", {}, m.metric), el("td", {}, m.n), el("td", {}, m.baseline.toFixed(4)), el("td", {}, m.candidate.toFixed(4)),
    el("td", { class: m.better > m.worse ? "delta-up" : m.worse > m.better ? "delta-down" : "" }, `${m.delta >= 0 ? "+" : ""}${m.delta.toFixed(4)}`),
    el("td", {}, `[${m.ci_low.toFixed(4)}, ${m.ci_high.toFixed(4)}]`), el("td", {}, m.better), el("td", {}, m.worse))));
});

// --- start ----------------------------------------------------------------------------------

loadCollections().then(() => show(currentPage())).catch((error) => { showError(error); show(currentPage()); });
