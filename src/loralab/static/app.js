// The loralab web page: one review per line -> POST predict -> one row per review with its
// label and a confidence bar. With several adapters served, a picker chooses one adapter or all
// of them (then each review shows every adapter's answer with its validation accuracy). A model
// trained on text pairs gets a second box (line i pairs with line i); a regression model's answer
// is its score.
// No external resources; user text is only ever set as textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("form");
  const input = $("texts");
  const pairInput = $("pairs");
  const button = $("classify");
  const status = $("status");
  const errorBox = $("error");
  const results = $("results");
  const picker = $("adapter");
  const pickerRow = $("adapter-row");
  let info = null; // GET health: model name, label names, limits
  let limits = null;
  let adapters = {}; // GET adapters: name -> metadata (label names, validation accuracy...)
  const ALL = "*all*";

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function linesOf(box) {
    return box.value.split(/\r?\n/).map((s) => s.trim()).filter((s) => s.length > 0);
  }

  function reviews() {
    return linesOf(input);
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

  function percent(x) {
    return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`;
  }

  function confidenceRow(p) {
    const pct = (100 * p.confidence).toFixed(1);
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
    return row;
  }

  function tooltip(p, labelNames) {
    return p.probabilities.map((q, k) => `${labelNames[k] ?? k}: ${(100 * q).toFixed(1)}%`).join(" · ");
  }

  function labelsOf(p) {
    return (p.adapter && adapters[p.adapter] && adapters[p.adapter].label_names) || (info && info.label_names) || [];
  }

  // one adapter (or a single model): one row per review
  function render(texts, predictions) {
    results.replaceChildren();
    predictions.forEach((p, i) => {
      if (p.score !== undefined) { // regression: the predicted number
        const row = el("li", "result other");
        row.append(el("span", "label", p.score.toFixed(3)), el("span", "text", texts[i]));
        results.append(row);
        return;
      }
      const li = el("li", `result ${tone(p.label_name)}`);
      li.dataset.label = p.label_name;
      if (p.adapter) li.dataset.adapter = p.adapter;
      li.title = tooltip(p, labelsOf(p));
      li.append(el("span", "label", p.label_name), confidenceRow(p), el("span", "text", texts[i]));
      results.append(li);
    });
  }

  // several adapters: per review, one line per adapter with its label, confidence and validation accuracy
  function renderAll(texts, names, predictions) {
    results.replaceChildren();
    predictions.forEach((answers, i) => {
      const li = el("li", "result group");
      li.append(el("span", "text", texts[i]));
      const table = el("ul", "answers");
      answers.forEach((p) => {
        const row = el("li", `answer ${tone(p.label_name)}`);
        row.dataset.adapter = p.adapter;
        row.dataset.label = p.label_name;
        row.title = tooltip(p, labelsOf(p));
        const meta = adapters[p.adapter] || {};
        row.append(el("span", "adapter-name", p.adapter), el("span", "label", p.label_name), confidenceRow(p),
          el("span", "accuracy muted", `val ${percent(meta.validation_accuracy)}`));
        table.append(row);
      });
      li.append(table);
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
      const request = { texts };
      if (info && info.text_pair) {
        const pairs = linesOf(pairInput);
        if (pairs.length !== texts.length) {
          showError(`Give one second text per text (${texts.length} texts, ${pairs.length} second texts).`);
          status.textContent = "";
          return;
        }
        request.text_pairs = pairs;
        texts.forEach((t, i) => { texts[i] = `${t} ‖ ${pairs[i]}`; }); // shown beside each answer
      }
      if (info && info.adapters) {
        if (picker.value === ALL) request.adapters = "all";
        else if (picker.value) request.adapter = picker.value;
      }
      const response = await fetch("predict", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        showError(body.detail ? `${body.detail} (HTTP ${response.status})` : `Server error (HTTP ${response.status}).`);
        status.textContent = "";
        return;
      }
      if (body.adapters) renderAll(texts, body.adapters, body.predictions);
      else render(texts, body.predictions);
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
      if (info.text_pair) {
        $("pair-row").hidden = false;
        $("texts-label").textContent = "First texts, one per line";
      }
      if (info.adapters) await loadAdapters();
    } catch (e) {
      $("model").textContent = "Model information unavailable.";
    }
  }

  async function loadAdapters() {
    const body = await (await fetch("adapters")).json();
    adapters = {};
    picker.replaceChildren();
    body.adapters.forEach((a) => {
      adapters[a.name] = a;
      const option = el("option", "", `${a.name} · val ${percent(a.validation_accuracy)}`);
      option.value = a.name;
      option.selected = a.name === body.default;
      picker.append(option);
    });
    const all = el("option", "", `all ${body.adapters.length} adapters`);
    all.value = ALL;
    picker.append(all);
    pickerRow.hidden = false;
    $("model").textContent = `${body.adapters.length} adapters over ${info.base_model}`;
  }

  form.addEventListener("submit", classify);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) classify(e);
  });
  loadInfo();
})();
