// The web page: classify a picked, dropped or pasted image; show generator samples and the model's record. No
// framework, no CDN.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const TOP_K = 5;
  const apiKeyInput = $("api-key");
  apiKeyInput.value = localStorage.getItem("sgan-api-key") || "";
  apiKeyInput.addEventListener("change", () => localStorage.setItem("sgan-api-key", apiKeyInput.value));

  function headers() {
    return apiKeyInput.value ? { "X-API-Key": apiKeyInput.value } : {};
  }

  // Every error the server sends is JSON {"detail": ...}; a 422's detail is a list of validation errors.
  async function errorText(response) {
    try {
      const body = await response.json();
      const detail = Array.isArray(body.detail)
        ? body.detail.map((e) => e.msg || JSON.stringify(e)).join("; ")
        : body.detail;
      if (response.status === 401) $("settings").open = true;
      return `${response.status}: ${detail}`;
    } catch (_) {
      return `${response.status} ${response.statusText}`;
    }
  }

  function percent(x) {
    return `${(100 * x).toFixed(1)}%`;
  }

  // One list item: a label, a bar filled to `share` (0..1) and the share in per cent.
  function barRow(label, share) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "score-label";
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = percent(share);
    bar.appendChild(fill);
    const value = document.createElement("span");
    value.className = "score-value";
    value.textContent = percent(share);
    item.append(name, bar, value);
    return item;
  }

  // ------------------------------------------------------------------ model card

  async function loadCard() {
    const response = await fetch("/info");
    if (!response.ok) {
      $("model-info").textContent = `Model not ready (${await errorText(response)})`;
      return;
    }
    const card = await response.json();
    const training = card.training || {};
    const parts = [`model ${card.model_id}`, `${card.class_names.length} classes`,
      `${card.image_shape.join("×")} images`];
    if (training.dataset) parts.push(`trained on ${training.dataset}`);
    const accuracy = (card.metrics || {}).test_accuracy;
    if (typeof accuracy === "number") parts.push(`test accuracy ${percent(accuracy)}`);
    $("model-info").textContent = parts.join(" · ");
    showModel(card);
    const select = $("sample-label");
    card.class_names.forEach((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      select.appendChild(option);
    });
  }

  // ------------------------------------------------------------------ model panel

  function describeSelection(selection) {
    if (!selection) return null;
    if (selection.rule === "final") return `the final model (round ${selection.round})`;
    const accuracy = typeof selection.accuracy === "number" ? `, ${percent(selection.accuracy)}` : "";
    return `${selection.rule}: round ${selection.round}${accuracy}`;
  }

  function cardFacts(card) {
    const training = card.training || {};
    const metrics = card.metrics || {};
    const perClass = training.labelled_per_class;
    const minutes = typeof training.duration_seconds === "number"
      ? `${(training.duration_seconds / 60).toFixed(1)} min` : null;
    return [
      ["data", training.dataset],
      ["images", typeof training.num_labelled === "number"
        ? `${training.num_labelled} labelled, ${training.num_unlabelled || 0} unlabelled` : null],
      ["labels per class", perClass ? Object.entries(perClass).map(([k, v]) => `${k} ${v}`).join(", ")
        : training.labels_per_class || null],
      ["chosen", describeSelection(training.selection)],
      ["trained", [minutes, training.device, training.precision].filter(Boolean).join(" · ") || null],
      ["test accuracy", typeof metrics.test_accuracy === "number"
        ? `${percent(metrics.test_accuracy)} on ${metrics.num_test_images || "?"} images` : null],
      ["labels-only baseline", typeof metrics.baseline_test_accuracy === "number"
        ? percent(metrics.baseline_test_accuracy) : null],
    ].filter(([, value]) => value !== null && value !== undefined && value !== "");
  }

  function showModel(card) {
    const facts = $("model-facts");
    facts.replaceChildren();
    cardFacts(card).forEach(([name, value]) => {
      const term = document.createElement("dt");
      term.textContent = name;
      const detail = document.createElement("dd");
      detail.textContent = String(value);
      facts.append(term, detail);
    });
    const perClass = (card.metrics || {}).per_class_test_accuracy;
    $("class-accuracy-note").hidden = Boolean(perClass);
    const list = $("class-accuracy");
    list.replaceChildren();
    Object.entries(perClass || {}).forEach(([name, accuracy]) => list.appendChild(barRow(name, accuracy)));
    // The server draws the matrix from the card once per model; the model id in the URL keeps caches honest.
    const image = $("confusion-image");
    const note = $("confusion-note");
    if (!(card.metrics || {}).confusion_matrix) {
      note.textContent = "The model card holds no confusion matrix (no test split, or an older model).";
      image.hidden = true;
      return;
    }
    image.onload = () => { note.hidden = true; image.hidden = false; };
    image.onerror = () => { note.textContent = "The confusion matrix could not be loaded."; };
    image.src = `/model/confusion.png?v=${encodeURIComponent(card.model_id)}`;
  }

  // ------------------------------------------------------------------ classify

  async function classify(file) {
    if (!file) return;
    const status = $("classify-status");
    const preview = $("preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    status.textContent = "Classifying…";
    const form = new FormData();
    form.append("file", file, file.name || "pasted-image");
    const query = new URLSearchParams({ top_k: String(TOP_K), invert: $("invert-select").value });
    let response;
    try {
      response = await fetch(`/classify?${query}`, { method: "POST", body: form, headers: headers() });
    } catch (err) {
      status.textContent = `Network error: ${err}`;
      return;
    }
    if (!response.ok) {
      $("result").hidden = true;
      status.textContent = `Refused: ${await errorText(response)}`;
      return;
    }
    showClassification(await response.json());
    status.textContent = "";
  }

  function showClassification(result) {
    $("prediction").textContent = result.label;
    $("confidence").textContent = `(${percent(result.confidence)})`;
    const list = $("scores");
    list.replaceChildren();
    result.top.forEach((score) => list.appendChild(barRow(score.label, score.probability)));
    $("realness-meter").value = result.realness;
    $("realness").textContent = result.realness.toFixed(3);
    $("inverted-note").hidden = !result.inverted;
    $("result").hidden = false;
  }

  const fileInput = $("file-input");
  fileInput.addEventListener("change", () => classify(fileInput.files[0]));

  const dropZone = $("drop-zone");
  ["dragenter", "dragover"].forEach((type) =>
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      dropZone.classList.add("dragging");
    }));
  ["dragleave", "drop"].forEach((type) =>
    dropZone.addEventListener(type, () => dropZone.classList.remove("dragging")));
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    classify(event.dataTransfer.files[0]);
  });
  dropZone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      fileInput.click();
    }
  });
  document.addEventListener("paste", (event) => {
    const file = Array.from(event.clipboardData ? event.clipboardData.files : [])[0];
    if (file) {
      event.preventDefault();
      classify(file);
    }
  });
  $("invert-select").addEventListener("change", () => classify(fileInput.files[0]));

  // ------------------------------------------------------------------ samples

  async function loadSamples(event) {
    if (event) event.preventDefault();
    const status = $("sample-status");
    const query = new URLSearchParams({ format: "json", n: $("sample-count").value || "16" });
    const seed = $("sample-seed-input").value;
    if (seed !== "") query.set("seed", seed);
    const label = $("sample-label").value;
    if (label) query.set("label", label);
    status.textContent = "Drawing…";
    let response;
    try {
      response = await fetch(`/sample?${query}`, { headers: headers() });
    } catch (err) {
      status.textContent = `Network error: ${err}`;
      return;
    }
    if (!response.ok) {
      status.textContent = `Refused: ${await errorText(response)}`;
      return;
    }
    const result = await response.json();
    const grid = $("samples");
    grid.replaceChildren();
    result.samples.forEach((sample) => {
      const figure = document.createElement("figure");
      const image = document.createElement("img");
      image.src = `data:image/png;base64,${sample.png_base64}`;
      image.alt = `generated sample classified as ${sample.label}`;
      const caption = document.createElement("figcaption");
      caption.textContent = `${sample.label} · real ${sample.realness.toFixed(2)}`;
      figure.append(image, caption);
      grid.appendChild(figure);
    });
    $("sample-seed").textContent = String(result.seed);
    $("sample-counts").textContent = result.label
      ? `(${result.found} of ${result.requested} classified as ${result.label}, from ${result.drawn} draws)`
      : `(${result.found} samples)`;
    status.textContent = "";
  }

  $("sample-form").addEventListener("submit", loadSamples);

  loadCard().then(() => loadSamples());
})();
