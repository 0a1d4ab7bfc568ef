// The loralab web page: one review per line -> POST predict -> one row per review with its
// label and a confidence bar. No external resources; user text is only ever set as textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("form");
  const input = $("texts");
  const button = $("classify");
  const status = $("status");
  const errorBox = $("error");
  const results = $("results");
  let info = null; // GET health: model name, label names, limits
  let limits = null;

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function reviews() {
    return input.value.split(/\r?\n/).map((s) => s.trim()).filter((s) => s.length > 0);
  }

  // a colour class from the label name: sentiment words, else neutral
  function tone(name) {
    const n = String(name).toLowerCase();
    if (/neg|bad/.test(n)) return "negative";
    if (/pos|good/.test(n)) return "positive";
    return "other";
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function render(texts, predictions, labelNames) {
    results.replaceChildren();
    predictions.forEach((p, i) => {
      const pct = (100 * p.confidence).toFixed(1);
      const li = el("li", `result ${tone(p.label_name)}`);
      li.dataset.label = p.label_name;
      li.title = p.probabilities
        .map((q, k) => `${labelNames[k] ?? k}: ${(100 * q).toFixed(1)}%`)
        .join(" · ");
      const bar = el("div", "bar");
      bar.setAttribute("role", "progressbar");
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "100");
      bar.setAttribute("aria-valuenow", pct);
      bar.setAttribute("aria-label", `confidence ${pct}%`);
      const fill = el("div", "fill");
      fill.style.width = `${pct}%`;
      bar.append(fill);
      const row = el("div", "bar-row");
      row.append(bar, el("span", "confidence", `${pct}%`));
      li.append(el("span", "label", p.label_name), row, el("span", "text", texts[i]));
      results.append(li);
    });
  }

  async function classify(event) {
    if (event) event.preventDefault();
    showError("");
    const texts = reviews();
    if (texts.length === 0) {
      showError("Type or paste at least one review, one per line.");
      return;
    }
    if (limits && texts.length > limits.max_texts) {
      showError(`At most ${limits.max_texts} reviews at a time (there are ${texts.length}).`);
      return;
    }
    button.disabled = true;
    status.textContent = "Classifying…";
    try {
      const response = await fetch("predict", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ texts }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        showError(body.detail ? `${body.detail} (HTTP ${response.status})` : `Server error (HTTP ${response.status}).`);
        status.textContent = "";
        return;
      }
      render(texts, body.predictions, (info && info.label_names) || []);
      status.textContent = `${texts.length} review${texts.length === 1 ? "" : "s"} classified.`;
    } catch (e) {
      showError(`Cannot reach the server (${e.message}).`);
      status.textContent = "";
    } finally {
      button.disabled = false;
    }
  }

  async function loadInfo() {
    try {
      const response = await fetch("health");
      info = await response.json();
      limits = info.limits;
      const parts = [info.name, info.method, `labels: ${info.label_names.join(", ")}`].filter(Boolean);
      $("model").textContent = parts.join(" · ");
    } catch (e) {
      $("model").textContent = "Model information unavailable.";
    }
  }

  form.addEventListener("submit", classify);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) classify(e);
  });
  loadInfo();
})();
