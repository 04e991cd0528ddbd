// The labelling page: vote without page loads, preload the next image, keyboard, undo, skip,
// zoom / contrast, first-visit tutorial. Without JavaScript the form still posts and reloads.
(() => {
  "use strict";
  const root = document.getElementById("labeller");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const image = $("radio");
  const form = $("vote-form");
  const choices = [...document.querySelectorAll(".choice")];
  const feedback = $("feedback");
  const undoButton = $("undo");
  const undoWindowMs = Number(root.dataset.undoWindow) * 1000;
  const sourceData = $("current-source");
  let current = sourceData ? JSON.parse(sourceData.textContent) : null;
  let preloaded = null; // the next source, its image already requested
  let busy = false;
  let undoTimer = null;
  let stretch = 0;
  let zoom = 1;

  const post = (url, data) =>
    fetch(url, {
      method: "POST",
      headers: { "X-CSRFToken": root.dataset.csrf },
      body: new URLSearchParams(data || {}),
      credentials: "same-origin",
    });

  const sexagesimal = (deg, hours) => {
    const sign = deg < 0 ? "-" : hours ? "" : "+";
    let v = Math.abs(deg) / (hours ? 15 : 1);
    const a = Math.floor(v); v = (v - a) * 60;
    const b = Math.floor(v); const c = (v - b) * 60;
    const pad = (x, n) => String(x).padStart(n, "0");
    return `${sign}${pad(a, 2)}${hours ? "h" : "°"}${pad(b, 2)}${hours ? "m" : "′"}${c.toFixed(hours ? 1 : 0).padStart(hours ? 4 : 2, "0")}${hours ? "s" : "″"}`;
  };

  const feedbackImage = $("feedback-image");

  // `about`: the source a message is about (gold feedback arrives after the next image is
  // shown, so its own thumbnail goes beside the words).
  function say(text, kind, about) {
    feedback.textContent = text || "";
    feedback.className = kind || "";
    feedbackImage.hidden = !about;
    if (about) {
      feedbackImage.src = about.thumbnail;
      feedbackImage.alt = `The source this is about: ${about.name}`;
      feedbackImage.dataset.source = about.id;
    } else {
      feedbackImage.removeAttribute("src");
      delete feedbackImage.dataset.source;
    }
  }

  function show(source) {
    current = source;
    if (!source) {
      document.querySelector(".viewer").hidden = true;
      $("done").hidden = false;
      return;
    }
    document.querySelector(".viewer").hidden = false;
    $("done").hidden = true;
    image.src = source.thumbnail;
    $("source-id").value = source.id;
    $("flag-source").value = source.id;
    $("flag-status").textContent = "";
    $("flag-box").open = false;
    $("source-name").textContent = source.name;
    $("source-position").textContent =
      source.ra_deg == null ? "" : `RA ${sexagesimal(source.ra_deg, true)}, Dec ${sexagesimal(source.dec_deg, false)}`;
    $("source-size").textContent = source.angular_size_arcsec ? `· ${source.angular_size_arcsec.toFixed(0)}″ across` : "";
    setZoom(1);
  }

  async function preload() {
    const params = new URLSearchParams();
    if (current) params.append("exclude", current.id);
    try {
      const response = await fetch(`${root.dataset.next}?${params}`, { credentials: "same-origin" });
      if (!response.ok) return;
      preloaded = (await response.json()).source;
      if (preloaded) new Image().src = preloaded.thumbnail; // warm the browser cache
    } catch (error) {
      preloaded = null;
    }
  }

  async function advance() {
    if (preloaded === null) await preload();
    show(preloaded);
    preloaded = null;
    if (current) preload();
  }

  function setBusy(value) {
    busy = value;
    choices.forEach((button) => (button.disabled = value));
  }

  async function vote(label) {
    if (busy || !current) return;
    setBusy(true);
    try {
      const response = await post(root.dataset.vote, { source: current.id, label });
      const body = await response.json();
      if (!response.ok) {
        say(body.error || "That vote could not be recorded.", "error");
        if (response.status === 400) await advance(); // e.g. retired meanwhile: move on
        return;
      }
      if (body.created) $("votes-cast").textContent = Number($("votes-cast").textContent) + 1;
      if (body.gold) say(body.gold_message, body.gold.correct ? "gold-right" : "gold-wrong", body.gold_source);
      else say("");
      armUndo();
      await advance();
    } catch (error) {
      say("Connection problem: your vote was not sent. Try again.", "error");
    } finally {
      setBusy(false);
    }
  }

  function armUndo() {
    undoButton.disabled = false;
    clearTimeout(undoTimer);
    undoTimer = setTimeout(() => (undoButton.disabled = true), undoWindowMs);
  }

  async function undo() {
    if (undoButton.disabled || busy) return;
    setBusy(true);
    try {
      const response = await post(root.dataset.undo);
      const body = await response.json();
      if (!response.ok) { say(body.error, "error"); return; }
      undoButton.disabled = true;
      $("votes-cast").textContent = Math.max(0, Number($("votes-cast").textContent) - 1);
      if (current) post(root.dataset.skip, { source: current.id }); // give the slot back
      preloaded = null;
      show(body.source);
      say("Vote undone: answer again.");
      preload();
    } finally {
      setBusy(false);
    }
  }

  async function skip() {
    if (busy || !current) return;
    post(root.dataset.skip, { source: current.id });
    say("");
    await advance();
  }

  function setZoom(value) {
    zoom = value;
    image.style.transform = `scale(${zoom})`;
    $("zoom").textContent = `Zoom ${zoom}×`;
  }

  function cycleStretch() {
    image.classList.remove(`stretch-${stretch}`);
    stretch = (stretch + 1) % 4;
    if (stretch) image.classList.add(`stretch-${stretch}`);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const label = event.submitter && event.submitter.value;
    if (label) vote(label);
  });
  $("flag-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!current) return;
    const status = $("flag-status");
    try {
      const response = await post($("flag-form").dataset.api, { source: current.id, note: $("flag-note").value });
      const body = await response.json();
      status.className = response.ok ? "" : "error";
      status.textContent = response.ok ? `Flagged ${current.name}: thank you!` : body.error;
      if (response.ok) $("flag-note").value = "";
    } catch (error) {
      status.className = "error";
      status.textContent = "Connection problem: the flag was not sent. Try again.";
    }
  });
  $("skip").addEventListener("click", skip);
  undoButton.addEventListener("click", undo);
  $("zoom").addEventListener("click", () => setZoom(zoom >= 3 ? 1 : zoom + 1));
  $("stretch").addEventListener("click", cycleStretch);
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea") || event.metaKey || event.ctrlKey || event.altKey) return;
    if (!$("tutorial").hidden) return;
    const index = Number.parseInt(event.key, 10) - 1;
    if (index >= 0 && index < choices.length) { event.preventDefault(); vote(choices[index].value); }
    else if (event.key === "ArrowRight") { event.preventDefault(); skip(); }
    else if (event.key === "ArrowLeft") { event.preventDefault(); undo(); }
    else if (event.key === "z" || event.key === "Z") setZoom(zoom >= 3 ? 1 : zoom + 1);
    else if (event.key === "s" || event.key === "S") cycleStretch();
  });

  // First visit: a three-step tutorial, recorded as seen on the server when closed.
  const tutorial = $("tutorial");
  if (root.dataset.firstVisit === "1") {
    const steps = [...tutorial.querySelectorAll(".step")];
    let step = 0;
    tutorial.hidden = false;
    $("tutorial-next").addEventListener("click", () => {
      steps[step].hidden = true;
      step += 1;
      if (step < steps.length) {
        steps[step].hidden = false;
        if (step === steps.length - 1) $("tutorial-next").textContent = "Start labelling";
      } else {
        tutorial.hidden = true;
        post(root.dataset.tutorial);
      }
    });
  }

  show(current);
  if (current) preload();
})();
