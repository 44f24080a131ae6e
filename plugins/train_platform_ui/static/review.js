// The review page's actions: decisions are kept on the page until Submit sends them, with
// the snapshot ids the page was rendered from, to the plugin's JSON API. The server decides
// who the reviewer is (Airflow's login); this script only sends decisions.
(function () {
  "use strict";
  const form = document.getElementById("tp-review");
  if (!form) return;
  const api = form.dataset.api;
  const canLabel = form.dataset.canLabel === "true";
  const samples = Array.from(form.querySelectorAll("article.tp-sample"));
  const pending = new Map(); // sample id -> {action, label}
  const message = document.getElementById("tp-message");
  const countText = document.getElementById("tp-pending-count");
  const submitButton = document.getElementById("tp-submit");
  let current = 0;

  function say(text, isError) {
    let alert = document.getElementById("tp-alert");
    if (isError) {
      if (!alert) {
        alert = document.createElement("p");
        alert.id = "tp-alert";
        alert.className = "tp-error";
        alert.setAttribute("role", "alert");
        message.insertAdjacentElement("afterend", alert);
      }
      alert.textContent = text;
      message.textContent = "";
    } else {
      if (alert) alert.remove();
      message.textContent = text;
    }
  }

  function describe(decision) {
    switch (decision.action) {
      case "accept": return "accept " + decision.label;
      case "correct": return "correct to " + decision.label;
      case "reject": return "reject as a bad sample";
      default: return "skip";
    }
  }

  function refresh(article) {
    const id = article.dataset.sampleId;
    const decision = pending.get(id);
    const line = article.querySelector("[data-role=pending]");
    line.textContent = decision ? "Pending: " + describe(decision) : "";
    article.classList.toggle("tp-decided", Boolean(decision));
    const n = pending.size;
    if (countText) countText.textContent = n ? n + " decision" + (n === 1 ? "" : "s") + " pending" : "No decision pending";
  }

  function pick(article, id, model, label) {
    // Choosing a label (from the list or one of the model's alternatives) corrects the
    // pre-label, or accepts it when it is the pre-label itself.
    const select = article.querySelector("[data-role=label]");
    if (select && Array.from(select.options).some(function (o) { return o.value === label; })) select.value = label;
    pending.set(id, label === model ? {action: "accept", label: model} : {action: "correct", label: label});
  }

  function decide(article, action, label) {
    if (!canLabel) return;
    const id = article.dataset.sampleId;
    const model = article.dataset.modelLabel;
    if (action === "alternative") {
      if (!label) return;
      pick(article, id, model, label);
    } else if (action === "undo") {
      pending.delete(id);
    } else if (action === "accept") {
      if (!model) return;
      pending.set(id, {action: "accept", label: model});
    } else if (action === "correct") {
      const typed = article.querySelector("[data-role=new-class]");
      const label = typed && typed.value.trim() ? typed.value.trim() : article.querySelector("[data-role=label]").value;
      if (!label) return;
      pending.set(id, label === model ? {action: "accept", label: model} : {action: "correct", label: label});
    } else {
      pending.set(id, {action: action});
    }
    refresh(article);
  }

  function focusSample(index) {
    if (!samples.length) return;
    current = Math.max(0, Math.min(samples.length - 1, index));
    samples[current].focus();
    samples[current].scrollIntoView({block: "nearest"});
  }

  samples.forEach(function (article, index) {
    article.addEventListener("click", function (event) {
      const button = event.target.closest("button[data-action]");
      current = index;
      if (button) decide(article, button.dataset.action, button.dataset.label);
    });
    article.addEventListener("focusin", function () { current = index; });
    const select = article.querySelector("[data-role=label]");
    if (select) select.addEventListener("change", function () { decide(article, "correct"); });
  });

  async function post(path, body) {
    const response = await fetch(api + path, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      let text = "The server refused it (" + response.status + ")";
      if (data && typeof data.detail === "string") text = data.detail;
      else if (data && Array.isArray(data.detail)) text = data.detail.map(function (d) { return d.msg; }).join("; ");
      throw new Error(text);
    }
    return data;
  }

  function snapshots() {
    return {
      branch: form.dataset.branch,
      review_snapshot: form.dataset.reviewSnapshot,
      branch_snapshot: form.dataset.branchSnapshot || null,
    };
  }

  function reloadWith(text) {
    const url = new URL(window.location.href);
    url.searchParams.set("submitted", text);
    window.location.assign(url.toString());
  }

  function summary(result) {
    const parts = [];
    if (result.accepted.length) parts.push(result.accepted.length + " accepted");
    const corrected = Object.keys(result.corrected).length;
    if (corrected) parts.push(corrected + " corrected");
    if (result.rejected.length) parts.push(result.rejected.length + " rejected");
    if (result.skipped.length) parts.push(result.skipped.length + " skipped");
    return "Submitted to " + result.branch + ": " + parts.join(", ") + ".";
  }

  async function submit() {
    if (!canLabel || !pending.size) {
      say(pending.size ? "" : "Nothing to submit: decide on a sample first.", !pending.size);
      return;
    }
    const decisions = Array.from(pending.entries()).map(function (entry) {
      const d = entry[1];
      return {sample_id: entry[0], action: d.action, label: d.action === "correct" ? d.label : null};
    });
    submitButton.disabled = true;
    say("Submitting " + decisions.length + " decision(s)…", false);
    try {
      const result = await post("/datasets/" + encodeURIComponent(form.dataset.dataset) + "/review",
                                Object.assign(snapshots(), {decisions: decisions}));
      pending.clear();
      reloadWith(summary(result));
    } catch (error) {
      say(error.message, true);
      submitButton.disabled = false;
    }
  }

  if (submitButton) submitButton.addEventListener("click", submit);

  const bulk = document.getElementById("tp-accept-above");
  if (bulk) bulk.addEventListener("click", async function () {
    const threshold = parseFloat(document.getElementById("tp-threshold").value);
    if (!(threshold >= 0 && threshold <= 1)) {
      say("The confidence must be a number from 0 to 1.", true);
      return;
    }
    bulk.disabled = true;
    try {
      const body = Object.assign(snapshots(), {min_confidence: threshold, batch: form.dataset.batch || null});
      const result = await post("/datasets/" + encodeURIComponent(form.dataset.dataset) + "/review/accept-above", body);
      reloadWith(summary(result));
    } catch (error) {
      say(error.message, true);
      bulk.disabled = false;
    }
  });

  document.addEventListener("keydown", function (event) {
    const target = event.target;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
      return;
    }
    if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) {
      if (event.key === "Escape") { target.blur(); focusSample(current); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || !samples.length) return;
    const article = samples[current];
    const keys = {a: "accept", r: "reject", s: "skip", u: "undo"};
    if (keys[event.key]) {
      event.preventDefault();
      decide(article, keys[event.key]);
      if (event.key !== "u") focusSample(current + 1);
    } else if (/^[1-9]$/.test(event.key)) {
      const choice = article.querySelectorAll("button[data-action=alternative]")[Number(event.key) - 1];
      if (!choice || choice.disabled) return;
      event.preventDefault();
      decide(article, "alternative", choice.dataset.label);
      focusSample(current + 1);
    } else if (event.key === "l") {
      event.preventDefault();
      const select = article.querySelector("[data-role=label]");
      if (select && !select.disabled) select.focus();
    } else if (event.key === "j") {
      event.preventDefault();
      focusSample(current + 1);
    } else if (event.key === "k") {
      event.preventDefault();
      focusSample(current - 1);
    }
  });
})();
