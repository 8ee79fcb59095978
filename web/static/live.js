// The list of sessions in progress: refreshed from /api/live (ids and counts only, no text).
(function () {
  "use strict";
  const body = document.getElementById("live");
  if (!body) return;
  const REFRESH_MS = 3000;

  function elapsedLabel(startedAt) {
    const s = Math.max(0, Math.floor(Date.now() / 1000 - startedAt));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  function render(rows) {
    const out = [];
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.dataset.sessionId = r.session_id;
      const link = document.createElement("a");
      link.className = "mono";
      link.href = "/sessions/" + encodeURIComponent(r.session_id);
      link.textContent = r.session_id;
      const first = document.createElement("td");
      first.appendChild(link);
      const elapsed = cell(elapsedLabel(r.started_at), "elapsed");
      elapsed.dataset.startedAt = r.started_at;
      tr.append(first, cell(r.therapist_id || "—", "mono"), cell(r.program_id || "—", "mono"), elapsed,
                cell(String(r.homework_so_far), "num"), cell(String(r.nudges_sent), "num"));
      out.push(tr);
    }
    body.replaceChildren(...out);
    document.getElementById("live-count").textContent = rows.length;
    document.getElementById("live-empty").hidden = rows.length > 0;
  }

  async function refresh() {
    try {
      const resp = await fetch("/api/live", {credentials: "same-origin"});
      if (resp.status === 401) { window.location = "/login"; return; }
      if (resp.ok) render((await resp.json()).sessions);
    } catch (e) { /* the next refresh tries again */ }
  }

  setInterval(() => {
    for (const td of body.querySelectorAll("td.elapsed")) {
      td.textContent = elapsedLabel(parseFloat(td.dataset.startedAt));
    }
  }, 1000);
  setInterval(refresh, REFRESH_MS);
  refresh();
})();
