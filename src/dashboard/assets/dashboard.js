// The dashboard's pages: each polls the engine's JSON once a second and redraws (the
// Datasets page lists once, and again on Refresh: listing reads the stores).
"use strict";

const ACTION_HEADER = "x-strata-dashboard";
const TICK_MS = 1000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n, u = 0;
  while (v >= 1024 && u + 1 < units.length) { v /= 1024; u++; }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

function count(n) { return (n ?? 0).toLocaleString("en-US"); }

function ms(n) {
  if (n === null || n === undefined) return "–";
  return n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${n.toFixed(1)} ms`;
}

function when(millis) { return new Date(millis).toLocaleTimeString(); }

function progressBar(q) {
  const bar = el("div", { class: "progress" });
  const fill = el("div", { class: "bar" });
  const share = q.state === "running" ? q.progress : (q.state === "finished" ? 1 : null);
  if (share === null || share === undefined) {
    fill.classList.add(q.state === "running" ? "unknown" : "none");
    fill.style.width = q.state === "running" ? "100%" : "0";
  } else {
    fill.style.width = `${(share * 100).toFixed(1)}%`;
  }
  bar.append(fill, el("span", {}, share === null || share === undefined ? "" : `${Math.round(share * 100)}%`));
  return bar;
}

function status(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.classList.toggle("bad", !!bad);
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// Ask `path` to cancel `what`; a refusal shows in the status line.
async function requestCancel(path, what) {
  const response = await fetch(path, { method: "POST", headers: { [ACTION_HEADER]: "cancel" } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    status(`${what} not cancelled: ${body.error || response.statusText}`, true);
  }
}

const cancelQuery = (id) => requestCancel(`/api/queries/${id}/cancel`, `query ${id}`);

function cancelButton(q) {
  const b = el("button", { class: "cancel", "data-query": q.id }, "Cancel");
  b.addEventListener("click", () => { b.disabled = true; cancelQuery(q.id); });
  return b;
}

function every(tick) {
  let timer = null;
  const run = async () => {
    let again = true;
    try { again = (await tick()) !== false; status(""); }
    catch (e) { status(`the engine did not answer: ${e.message}`, true); }
    if (again) timer = setTimeout(run, TICK_MS);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer !== null) { clearTimeout(timer); run(); }
  });
  run();
}

function queriesPage() {
  const body = document.querySelector("#queries tbody");
  every(async () => {
    if (document.hidden) return;
    const queries = await getJson("/api/queries");
    const live = (q) => q.state === "running" || q.state === "planning";
    queries.sort((a, b) => (live(b) - live(a)) || (b.id - a.id));
    const rows = queries.map((q) => {
      const sql = q.sql.length > 120 ? q.sql.slice(0, 120) + "…" : q.sql;
      return el("tr", { "data-query": q.id, "data-state": q.state },
        el("td", {}, el("a", { href: `/queries/${q.id}` }, String(q.id))),
        el("td", {}, el("span", { class: `state ${q.state}` }, q.state)),
        el("td", { class: "sql", title: q.sql }, el("a", { href: `/queries/${q.id}` }, sql)),
        el("td", {}, q.user || q.session.slice(0, 8)),
        el("td", {}, when(q.started_ms)),
        el("td", { class: "num" }, ms(q.planning_ms)),
        el("td", { class: "num" }, ms(q.execution_ms)),
        el("td", {}, progressBar(q)),
        el("td", { class: "num" }, count(q.rows)),
        el("td", { class: "num" }, bytes(q.bytes_read || q.file_bytes)),
        el("td", { class: "num" }, bytes(q.peak_memory)),
        el("td", { class: "num" }, q.spilled_bytes ? bytes(q.spilled_bytes) : "–"),
        el("td", {}, q.state === "running" ? cancelButton(q) : (q.error ? el("span", { class: "error", title: q.error }, "error") : "")));
    });
    body.replaceChildren(...rows);
    document.getElementById("empty").hidden = queries.length > 0;
  });
}

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// The stage graph: one box per stage, placed by depth (the stages it reads come first).
function stageGraph(stages) {
  const depth = {};
  const byId = Object.fromEntries(stages.map((s) => [s.id, s]));
  const level = (s, seen = new Set()) => {
    if (depth[s.id] !== undefined) return depth[s.id];
    if (seen.has(s.id)) return 0;
    seen.add(s.id);
    const inputs = s.inputs.map((i) => byId[i]).filter(Boolean);
    depth[s.id] = inputs.length ? 1 + Math.max(...inputs.map((i) => level(i, seen))) : 0;
    return depth[s.id];
  };
  stages.forEach((s) => level(s));
  const columns = {};
  stages.forEach((s) => { (columns[depth[s.id]] ||= []).push(s); });
  const W = 170, H = 54, GX = 50, GY = 16, place = {};
  Object.entries(columns).forEach(([d, list]) => list.forEach((s, i) => {
    place[s.id] = { x: 10 + Number(d) * (W + GX), y: 10 + i * (H + GY) };
  }));
  const width = 20 + (Math.max(0, ...Object.keys(columns).map(Number)) + 1) * (W + GX);
  const height = 20 + Math.max(1, ...Object.values(columns).map((l) => l.length)) * (H + GY);
  const svg = svgEl("svg", { width, height, class: "stages" });
  for (const s of stages) for (const i of s.inputs) {
    if (!place[i]) continue;
    svg.append(svgEl("line", { x1: place[i].x + W, y1: place[i].y + H / 2, x2: place[s.id].x, y2: place[s.id].y + H / 2, class: "edge" }));
  }
  for (const s of stages) {
    const p = place[s.id];
    const g = svgEl("g", { class: `stage ${s.status.toLowerCase()}`, "data-stage": s.id });
    g.append(svgEl("rect", { x: p.x, y: p.y, width: W, height: H, rx: 4 }));
    const share = s.tasks ? s.tasks_done / s.tasks : 0;
    g.append(svgEl("rect", { x: p.x, y: p.y + H - 5, width: W * share, height: 5, class: "done" }));
    g.append(svgEl("text", { x: p.x + 8, y: p.y + 18 }, `Stage ${s.id} · ${s.status}`));
    g.append(svgEl("text", { x: p.x + 8, y: p.y + 36, class: "small" },
      `${s.tasks_done}/${s.tasks} tasks · ${count(s.output_rows)} rows out`));
    svg.append(g);
  }
  return svg;
}

// The task stream: a bar per task from its start to its end (or now), one lane per executor
// where the scheduler says which ran each task (else one per stage), coloured by stage, with
// its figures in its tooltip.
function taskStream(tasks, stages) {
  if (!tasks.length) return document.createTextNode("No task has started yet.");
  const byExecutor = tasks.every((t) => t.executor);
  const laneOf = (t) => byExecutor ? t.executor : t.stage;
  const lanes = byExecutor ? [...new Set(tasks.map(laneOf))].sort() : stages.map((s) => s.id);
  // One colour per stage, none of them the red of a failed task.
  const palette = ["#5c7cfa", "#20c997", "#845ef7", "#fab005", "#15aabf", "#94d82d", "#cc5de8", "#339af0"];
  const colour = (stage) => palette[Math.max(0, stages.findIndex((s) => s.id === stage)) % palette.length];
  const now = Date.now();
  const t0 = Math.min(...tasks.map((t) => t.start_ms));
  const t1 = Math.max(...tasks.map((t) => t.end_ms ?? now), t0 + 1);
  const W = 900, L = 22, left = byExecutor ? 150 : 70;
  const svg = svgEl("svg", { width: W + left + 10, height: lanes.length * L + 30, class: "tasks" });
  lanes.forEach((id, i) => svg.append(svgEl("text", { x: 4, y: i * L + 15, class: "small", "data-lane": id },
    byExecutor ? `executor ${id.slice(0, 12)}` : `stage ${id}`)));
  const x = (t) => left + ((t - t0) / (t1 - t0)) * W;
  for (const t of tasks) {
    const lane = lanes.indexOf(laneOf(t));
    if (lane < 0) continue;
    const end = t.end_ms ?? now;
    const rect = svgEl("rect", { x: x(t.start_ms), y: lane * L + 4, width: Math.max(1, x(end) - x(t.start_ms)), height: L - 8,
      class: `task ${t.state}`, "data-stage": t.stage, style: t.state === "done" ? `fill: ${colour(t.stage)}` : "" });
    rect.append(svgEl("title", {}, `stage ${t.stage}, partitions ${t.partitions.join(", ")}` +
      (t.executor ? `, executor ${t.executor}` : "") + `, ${t.state}, ${((end - t.start_ms) / 1000).toFixed(2)} s`));
    svg.append(rect);
  }
  svg.append(svgEl("text", { x: left, y: lanes.length * L + 20, class: "small" }, `${((t1 - t0) / 1000).toFixed(2)} s`));
  return svg;
}

// A cluster job's stage graph, stage table and task stream.
function showStages(job) {
  document.getElementById("stage-graph").replaceChildren(stageGraph(job.stage_list));
  document.querySelector("#stages tbody").replaceChildren(...job.stage_list.map((s) => el("tr", { "data-stage": s.id },
    el("td", {}, s.id), el("td", {}, s.status),
    el("td", {}, `${s.tasks_done} / ${s.tasks} done` + (s.tasks_running ? `, ${s.tasks_running} running` : "") + (s.tasks_failed ? `, ${s.tasks_failed} failed` : "")),
    el("td", {}, s.inputs.join(", ") || "–"),
    el("td", { class: "num" }, count(s.input_rows)), el("td", { class: "num" }, count(s.output_rows)),
    el("td", { class: "num" }, s.inputs.length ? bytes(s.shuffle_bytes_fetched) : "–"),
    el("td", { class: "num" }, bytes(s.shuffle_bytes_written)),
    el("td", { class: "num" }, bytes(s.spilled_bytes)),
    el("td", { class: "num" }, s.elapsed ?? "–"))));
  document.getElementById("task-stream").replaceChildren(taskStream(job.task_stream, job.stage_list));
}

const cancelJob = (id) => requestCancel(`/api/cluster/jobs/${encodeURIComponent(id)}/cancel`, `job ${id}`);

const liveJob = (j) => j.status === "Running" || j.status === "Queued";

function jobsPage() {
  const body = document.querySelector("#jobs tbody");
  every(async () => {
    if (document.hidden) return;
    const jobs = await getJson("/api/cluster/jobs");
    const rows = jobs.map((j) => {
      const seconds = ((j.ended_ms ?? Date.now()) - j.started_ms) / 1000;
      const cancel = el("button", { class: "cancel", "data-job": j.job_id }, "Cancel");
      cancel.addEventListener("click", () => { cancel.disabled = true; cancelJob(j.job_id); });
      return el("tr", { "data-job": j.job_id, "data-state": j.status },
        el("td", { class: "sql" }, el("a", { href: `/jobs/${encodeURIComponent(j.job_id)}` }, j.job_id)),
        el("td", {}, el("span", { class: `state ${j.status.toLowerCase()}` }, j.status)),
        el("td", { class: "sql", title: j.name }, j.name),
        el("td", {}, when(j.started_ms)),
        el("td", { class: "num" }, `${seconds.toFixed(2)} s`),
        el("td", {}, `${j.stages_done} / ${j.stages}`),
        el("td", {}, liveJob(j) ? cancel : ""));
    });
    body.replaceChildren(...rows);
    document.getElementById("empty").hidden = jobs.length > 0;
  });
}

function jobPage() {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  document.getElementById("job-id").textContent = id;
  const cancel = document.getElementById("cancel");
  cancel.addEventListener("click", () => { cancel.disabled = true; cancelJob(id); });
  every(async () => {
    const job = await getJson(`/api/cluster/jobs/${encodeURIComponent(id)}`);
    const state = document.getElementById("state");
    state.textContent = job.status;
    state.className = `state ${job.status.toLowerCase()}`;
    cancel.hidden = !liveJob(job);
    const items = [["Stages", `${job.stages_done} / ${job.stages} done`],
      ["Tasks", `${job.tasks_running} running, ${job.tasks_done} done`], ["Rows scanned", count(job.rows_scanned)]];
    document.getElementById("job").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    showStages(job);
    return liveJob(job);
  });
}

function queryPage() {
  const id = Number(location.pathname.split("/").pop());
  document.getElementById("query-id").textContent = id;
  document.getElementById("dot").href = `/api/queries/${id}/plan.dot`;
  document.getElementById("svg").href = `/api/queries/${id}/plan.svg`;
  document.getElementById("report").href = `/api/queries/${id}/report.html`;
  const cancel = document.getElementById("cancel");
  cancel.addEventListener("click", () => { cancel.disabled = true; cancelQuery(id); });
  let drawn = false;
  every(async () => {
    if (document.hidden && drawn) return;
    const { query: q, job } = await getJson(`/api/queries/${id}`);
    document.getElementById("sql").textContent = q.sql;
    const state = document.getElementById("state");
    state.textContent = q.state;
    state.className = `state ${q.state}`;
    cancel.hidden = q.state !== "running";
    const fresh = progressBar(q);
    document.getElementById("bar").replaceWith(Object.assign(fresh.firstChild, { id: "bar" }));
    document.getElementById("percent").textContent = fresh.lastChild.textContent;
    const figures = [
      ["Session", q.user ? `${q.user} (${q.session})` : q.session], ["Started", when(q.started_ms)],
      ["Planning", ms(q.planning_ms)], ["Execution", ms(q.execution_ms)], ["Elapsed", ms(q.elapsed_ms)],
      ["Rows returned", count(q.rows)], ["Files", count(q.files)], ["File bytes", bytes(q.file_bytes)],
      ["Bytes read", bytes(q.bytes_read)], ["Rows read", count(q.rows_read)],
      ["Peak memory", bytes(q.peak_memory)], ["Spilled", bytes(q.spilled_bytes)],
      ["Where", q.cluster ? "cluster" : "this process"],
    ];
    document.getElementById("figures").replaceChildren(...figures.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const error = document.getElementById("error");
    error.hidden = !q.error;
    error.textContent = q.error || "";
    document.getElementById("job-section").hidden = !job;
    if (job) {
      const items = [["Status", job.status], ["Stages", `${job.stages_done} / ${job.stages} done`],
        ["Tasks", `${job.tasks_running} running, ${job.tasks_done} done`], ["Rows scanned", count(job.rows_scanned)]];
      document.getElementById("job").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
      showStages(job);
    }
    const plan = await fetch(`/api/queries/${id}/plan.svg`, { cache: "no-store" });
    const holder = document.getElementById("plan");
    if (plan.ok) holder.innerHTML = await plan.text();
    else if (!drawn) holder.textContent = (await plan.json().catch(() => ({}))).error || "no plan";
    drawn = true;
    // An ended query's figures no longer change: one last drawing, then stop.
    return q.state === "running" || q.state === "planning";
  });
}

function datasetsPage() {
  const body = document.querySelector("#datasets tbody");
  const load = async () => {
    status("listing…");
    const tables = await getJson("/api/datasets");
    status("");
    const rows = tables.flatMap((t) => {
      const where = t.locations.join(", ");
      const parts = t.partition_columns.length
        ? `${t.partitions ?? 0} (${t.partition_columns.map((p) => `${p.name}: ${p.distinct_values}`).join(", ")})`
        : "–";
      const row = el("tr", { class: "expandable", "data-table": t.name },
        el("td", {}, t.name),
        el("td", {}, t.kind),
        el("td", {}, t.format ?? "–"),
        el("td", { class: "sql", title: where }, where || "–"),
        el("td", { class: "num" }, t.files === null ? "–" : count(t.files)),
        el("td", { class: "num" }, t.bytes === null ? "–" : bytes(t.bytes)),
        el("td", {}, parts),
        el("td", { class: "num" }, t.error ? el("span", { class: "error" }, t.error) : String(t.columns.length)));
      const list = el("ul", { class: "columns" }, ...t.columns.map((c) =>
        el("li", {}, c.name, " ", el("span", { class: "type" }, c.data_type + (c.nullable ? "" : " not null")))));
      const detail = el("tr", { class: "detail", hidden: "" }, el("td", { colspan: "8" }, list));
      row.addEventListener("click", () => { detail.hidden = !detail.hidden; });
      return [row, detail];
    });
    body.replaceChildren(...rows);
    document.getElementById("empty").hidden = tables.length > 0;
  };
  const refresh = () => load().catch((e) => status(`the engine did not answer: ${e.message}`, true));
  document.getElementById("refresh").addEventListener("click", refresh);
  refresh();
}

function workersPage() {
  const body = document.querySelector("#workers tbody");
  every(async () => {
    if (document.hidden) return;
    const w = await getJson("/api/workers");
    document.getElementById("where").textContent = w.kind === "cluster"
      ? `Executors of the cluster whose scheduler is ${w.scheduler}; one that leaves is marked dead. Refreshes every second.`
      : "This engine runs its queries on this process's threads. Refreshes every second.";
    if (w.error) status(`the scheduler did not answer: ${w.error}`, true);
    const ago = (t) => t === null ? "–" : `${Math.max(0, (Date.now() - t) / 1000).toFixed(0)} s ago`;
    const rows = w.workers.map((x) => el("tr", { "data-worker": x.id, "data-state": x.state },
      el("td", { class: "sql" }, x.id),
      el("td", {}, el("span", { class: `state ${x.state}` }, x.state)),
      el("td", {}, x.port === null ? x.host : `${x.host}:${x.port}`),
      el("td", { class: "num" }, x.slots ?? "–"),
      el("td", { class: "num" }, x.running ?? "–"),
      el("td", { class: "num" }, bytes(x.memory_used)),
      el("td", { class: "num" }, bytes(x.memory_total)),
      el("td", { class: "num" }, bytes(x.memory_peak)),
      el("td", { class: "num" }, bytes(x.spilled_bytes)),
      el("td", {}, x.state === "dead" ? `gone ${ago(x.gone_ms)}` : ago(x.last_seen_ms))));
    body.replaceChildren(...rows);
    document.getElementById("empty").hidden = w.workers.length > 0;
  });
}

if (document.body.dataset.page === "queries") queriesPage();
if (document.body.dataset.page === "query") queryPage();
if (document.body.dataset.page === "datasets") datasetsPage();
if (document.body.dataset.page === "jobs") jobsPage();
if (document.body.dataset.page === "job") jobPage();
if (document.body.dataset.page === "workers") workersPage();
