// Therapist session panel: live detections, nudges and the charting note over server-sent events,
// thumbs up/down as clinician feedback. No inline script (the CSP forbids it); text goes in via
// textContent only.
(function () {
  "use strict";
  const root = document.getElementById("session");
  if (!root) return;
  const sessionId = root.dataset.sessionId;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const base = "/api/sessions/" + encodeURIComponent(sessionId);
  let ended = root.dataset.ended === "true";
  const startedAt = parseFloat(root.dataset.startedAt);

  function flash(el) {
    el.classList.add("fresh");
    setTimeout(() => el.classList.remove("fresh"), 2500);
  }

  function fromTemplate(id) {
    return document.getElementById(id).content.firstElementChild.cloneNode(true);
  }

  function addDetection(d) {
    const body = document.getElementById("detections");
    if (body.querySelector('tr[data-event-id="' + CSS.escape(d.event_id) + '"]')) return;
    const tr = fromTemplate("detection-template");
    tr.dataset.eventId = d.event_id;
    tr.querySelector(".time").textContent = d.time_label;
    const cat = tr.querySelector(".cat");
    cat.textContent = d.category_title;
    cat.className = "cat cat-" + d.category;
    tr.querySelector(".quote").textContent = d.quote;
    tr.querySelector(".confidence").textContent = d.confidence_label;
    markVote(tr, d.my_vote);
    flash(tr);
    body.appendChild(tr);
    document.getElementById("detections-empty").hidden = true;
    document.getElementById("homework-count").textContent = body.rows.length;
  }

  function addNudge(n) {
    const list = document.getElementById("nudges");
    if (list.querySelector('li[data-nudge-id="' + CSS.escape(n.nudge_id) + '"]')) return;
    const li = fromTemplate("nudge-template");
    li.dataset.nudgeId = n.nudge_id;
    li.dataset.rule = n.rule;
    li.className = "nudge rule-" + n.rule;
    flash(li);
    li.querySelector(".message").textContent = n.message;
    li.querySelector(".time").textContent = n.time_label;
    const prev = li.querySelector(".previous");
    for (const a of n.previous_assignments || []) {
      const item = document.createElement("li");
      const cat = document.createElement("span");
      cat.className = "cat cat-" + a.category;
      cat.textContent = a.category_title;
      const q = document.createElement("q");
      q.textContent = a.quote;
      item.append(cat, " ", q);
      prev.appendChild(item);
    }
    list.prepend(li);
    document.getElementById("nudges-empty").hidden = true;
  }

  function showSummary(s) {
    ended = true;
    document.getElementById("note").textContent = s.note || "";
    document.getElementById("followup").textContent = s.followup_label || "";
    document.getElementById("elapsed").textContent = s.elapsed_label || "";
    document.getElementById("note-panel").hidden = false;
    const badge = document.getElementById("status-badge");
    badge.textContent = "Ended";
    badge.className = "badge ended";
  }

  function markVote(tr, vote) {
    for (const b of tr.querySelectorAll(".thumb")) {
      b.setAttribute("aria-pressed", String(b.dataset.vote === vote));
    }
  }

  document.getElementById("detections").addEventListener("click", async (ev) => {
    const button = ev.target.closest(".thumb");
    if (!button) return;
    const tr = button.closest("tr");
    // Pressing the pressed thumb again withdraws the vote.
    const vote = button.getAttribute("aria-pressed") === "true" ? null : button.dataset.vote;
    const resp = await fetch(base + "/feedback", {
      method: "POST", credentials: "same-origin",
      headers: {"content-type": "application/json", "x-csrf-token": csrf},
      body: JSON.stringify({event_id: tr.dataset.eventId, vote: vote}),
    });
    if (resp.status === 401) { window.location = "/login"; return; }
    if (resp.ok) markVote(tr, (await resp.json()).vote);
  });

  document.getElementById("copy-note").addEventListener("click", async () => {
    const text = document.getElementById("note").textContent;
    const status = document.getElementById("copy-status");
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = "Copied.";
    } catch (e) {
      // Without clipboard permission (plain http off loopback): select it for Ctrl-C.
      const range = document.createRange();
      range.selectNodeContents(document.getElementById("note"));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      status.textContent = document.execCommand("copy") ? "Copied." : "Selected: press Ctrl-C.";
    }
  });

  function tickElapsed() {
    if (ended || isNaN(startedAt)) return;
    const s = Math.max(0, Math.floor(Date.now() / 1000 - startedAt));
    document.getElementById("elapsed").textContent =
      Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0") + " elapsed";
  }
  setInterval(tickElapsed, 1000);

  // An ended session's page is complete as served: no stream (each stream opened is an audited view).
  if (ended) return;
  const stream = new EventSource(base + "/stream");
  stream.addEventListener("detection", (e) => addDetection(JSON.parse(e.data)));
  stream.addEventListener("nudge", (e) => addNudge(JSON.parse(e.data)));
  // The summary is the stream's last message: close it, or EventSource would reconnect.
  stream.addEventListener("summary", (e) => { stream.close(); showSummary(JSON.parse(e.data)); });
  stream.addEventListener("logged_out", () => { stream.close(); window.location = "/login"; });
  stream.addEventListener("error", () => {
    // EventSource reconnects by itself after a dropped connection; one refused (401 after a logout or
    // expiry, 404) is closed for good: reloading shows the login form or the not-found page.
    if (stream.readyState === EventSource.CLOSED) window.location.reload();
  });
  root.dataset.stream = "open";
})();
