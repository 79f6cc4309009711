// kissgen studio: the whole page in one ES module. No framework, no build step, no inline script or
// style (the page's Content-Security-Policy forbids them). It only calls the public API, on the
// origin (and route prefix) it was served from: everything it does can be done with curl.

const ROOT = new URL("../", import.meta.url); // studio.js lives at <root>/static/studio.js
const KEY_STORAGE = "kissgen.apiKey";
const TERMINAL = new Set(["completed", "failed", "canceled"]);
const POLL_MS = 1000;

// The quality thresholds of kiss_core/generation/quality/thresholds.py (QualityThresholds);
// tests/browser/test_page_files.py keeps the two in step.
export const THRESHOLDS = {
  similarity_mean: 0.92,
  similarity_min: 0.85,
  visible_share: 0.8,
  both_found: 0.8,
  mouth_distance: 0.3,
  seam: 1.8,
  flicker_mean: 0.5,
  flicker_p95: 1.0,
  lighting_ratio: 0.7,
  lighting_floor: 2.0,
};

// What the page assumes of a service without GET /v1/capabilities.
const DEFAULT_CAPABILITIES = {
  backends: [{ name: "preview", default: true }],
  qualities: [],
  loras: [],
  styles: ["peck", "romantic", "french", "cheek"],
  intensity: { min: 0, max: 1, default: 0.5 },
  seconds: { min: 1, max: 10, default: 5 },
  shapes: { landscape: "832x480", portrait: "480x832", square: "640x640" },
  fps: 24,
  limits: {},
  api_key_required: false,
  consent_text: "I attest that the person in this photo (or photos) is an adult and consented to this video.",
  report_reasons: ["not_consented", "minor", "explicit", "impersonation", "harassment", "other"],
};

// A problem's `code` in plain words; an unknown code shows the problem's own `detail`.
const REFUSALS = {
  face_not_found: "No face was found in this photo. Use a photo where one face is clearly visible.",
  face_too_small: "The face is too small in this photo. Use a closer photo, or one with a larger face.",
  multiple_faces: "More than one face is in this photo. Use a photo of this person alone.",
  subject_may_be_minor: "This person may be under 18. Only photos of adults can be used.",
  explicit_content: "This photo looks sexually explicit. Use a photo without nudity.",
  output_blocked: "The generated video did not pass the safety check and was not kept. Try other photos.",
  image_unreadable: "This file could not be read as an image.",
  unsupported_image: "This image format is not supported. Use a JPEG, PNG or WebP photo.",
  unsupported_media: "This kind of file is not supported here.",
  image_too_small: "This photo is too small. Use a larger one.",
  image_too_large: "This photo has too many pixels. Use a smaller one.",
  subject_photos_mismatch: "The photos of one person do not all show the same person.",
  too_many_photos: "More photos of one person were sent than the service takes.",
  payload_too_large: "This file is too large for the service.",
  consent_required: "Both people must have agreed: tick both consent boxes.",
  rate_limited: "Too many requests with this key. Wait a moment and try again.",
  too_many_jobs: "You already have as many videos in the making as your key allows. Wait for one to finish.",
  overloaded: "The service is busy. Try again in a few seconds.",
  job_finished: "The video had already finished; there is nothing to cancel.",
  not_found: "That video does not exist (any more).",
  storage_unavailable: "The service's storage is not reachable right now. Try again later.",
};

// The codes that refuse a photo itself: a submission refused with one marks that photo.
const PHOTO_REFUSALS = new Set([
  "face_not_found",
  "face_too_small",
  "multiple_faces",
  "subject_may_be_minor",
  "explicit_content",
  "image_unreadable",
  "unsupported_image",
  "unsupported_media",
  "image_too_small",
  "image_too_large",
]);

const STATUS_WORDS = {
  queued: "Waiting in the queue",
  in_progress: "Making the video",
  completed: "Done",
  failed: "Failed",
  canceled: "Canceled. The record is kept; the photos and any partial output were erased.",
};

const STYLE_NAMES = { peck: "Peck", romantic: "Romantic", french: "French", cheek: "On the cheek" };
const SHAPE_NAMES = { landscape: ["Landscape", "16:9"], portrait: ["Portrait", "9:16"], square: ["Square", "1:1"] };
const REASON_NAMES = {
  not_consented: "A person in it did not consent",
  minor: "A person in it may be a minor",
  explicit: "It is sexually explicit",
  impersonation: "It impersonates someone",
  harassment: "It is used to harass someone",
  other: "Something else",
};
const SUBJECT_NAMES = { a: "person A", b: "person B" };

const $ = (id) => document.getElementById(id);

// Read by the browser tests: how the page learned about the job (events vs polls), the states the
// events showed, and when the first one arrived (ms after the page started loading).
const stats = { events: 0, polls: 0, streams: 0, heartbeats: 0, seen: [], submittedMs: null, firstEventMs: null };
window.studio = { stats };

const state = {
  caps: DEFAULT_CAPABILITIES,
  photos: { a: [], b: [] }, // per person, the chosen photos in the order shown (see "Photos and analysis")
  added: { a: 0, b: 0 }, // photos ever added per person: each one's id
  notice: { a: null, b: null }, // {text, bad}: what the last change or refusal says, until the next change
  mismatch: { a: null, b: null }, // the pairs of photos subject_photos_mismatch found to be different people
  submitting: false,
  job: null,
  follow: null,
  resultFor: null,
  previewRevision: null,
  urls: [],
  previewUrl: null,
  cursor: null,
  verifySha: null,
};

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// ---- API -----------------------------------------------------------------------------------------

function apiUrl(path) {
  return new URL(path.replace(/^\/+/, ""), ROOT);
}

function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  return headers;
}

async function apiFetch(path, options = {}) {
  const response = await fetch(apiUrl(path), { ...options, headers: authHeaders(options.headers || {}) });
  if (response.status === 401) {
    const problem = await readProblem(response);
    askForKey(apiKey() ? `The service did not accept this key: ${problem.detail || problem.title}` : null);
    throw new ApiError(401, problem);
  }
  return response;
}

async function readProblem(response) {
  try {
    const body = await response.json();
    if (body && typeof body === "object") return body;
  } catch {
    // not JSON: fall through
  }
  return { status: response.status, title: response.statusText || `HTTP ${response.status}`, detail: "" };
}

// JSON in, JSON out; a non-2xx answer throws ApiError with the problem+json body.
async function api(path, options = {}) {
  const response = await apiFetch(path, options);
  if (!response.ok) throw new ApiError(response.status, await readProblem(response));
  return response.status === 204 ? null : response.json();
}

async function apiBlob(path) {
  const response = await apiFetch(path);
  if (!response.ok) throw new ApiError(response.status, await readProblem(response));
  return response.blob();
}

function problemText(error) {
  if (!(error instanceof ApiError)) return `The service could not be reached (${error.message}).`;
  const { code, detail, title } = error.problem;
  return REFUSALS[code] || detail || title || `HTTP ${error.status}`;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function randomToken() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- Keys ----------------------------------------------------------------------------------------

function askForKey(reason) {
  $("key-panel").hidden = false;
  $("key-why").textContent =
    reason ||
    "This service needs an API key. It is kept in this tab only (sessionStorage) and sent with each request.";
  $("key-input").focus();
}

function setupKey() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key-input").value = "";
    $("key-panel").hidden = true;
    $("key-change").hidden = false;
    loadVideos(true);
    for (const subject of ["a", "b"]) {
      for (const entry of state.photos[subject]) {
        // refused for want of a key, or not checked at all: checked again with it
        const again = entry.error && (!(entry.error instanceof ApiError) || entry.error.status === 401);
        if (again) checkPhoto(subject, entry);
      }
    }
  });
  $("key-change").addEventListener("click", () => askForKey(null));
}

// ---- Capabilities and choices --------------------------------------------------------------------

async function loadCapabilities() {
  try {
    const response = await fetch(apiUrl("v1/capabilities"));
    if (response.ok) state.caps = { ...DEFAULT_CAPABILITIES, ...(await response.json()) };
  } catch {
    // an older service: the defaults
  }
  const caps = state.caps;
  for (const element of document.querySelectorAll(".consent-text")) element.textContent = caps.consent_text;
  renderPhotoLimit();
  renderStyles(caps.styles);
  renderShapes(caps.shapes);
  const intensity = $("intensity");
  intensity.min = caps.intensity.min;
  intensity.max = caps.intensity.max;
  intensity.value = caps.intensity.default;
  $("intensity-value").textContent = Number(intensity.value).toFixed(2);
  const seconds = $("seconds");
  seconds.min = caps.seconds.min;
  seconds.max = caps.seconds.max;
  seconds.value = caps.seconds.default;
  $("fps").placeholder = String(caps.fps);
  renderSelect("backend", caps.backends.map((b) => [b.name, b.default ? `${b.name} (default)` : b.name]));
  $("backend-field").hidden = !caps.backends.some((b) => b.name !== "preview");
  renderSelect("quality", caps.qualities.map((q) => [q, q]));
  $("quality-field").hidden = caps.qualities.length === 0;
  const loras = caps.loras.map((l) => [l.name, `${l.name} (${l.base})`]);
  renderSelect("lora", [["none", "No LoRA"], ...loras]);
  $("lora-field").hidden = caps.loras.length === 0;
  for (const id of ["report-reason", "verify-reason"]) {
    const select = $(id);
    select.replaceChildren(
      ...caps.report_reasons.map((reason) => new Option(REASON_NAMES[reason] || reason, reason)),
    );
  }
}

function renderSelect(id, entries) {
  $(id).replaceChildren(new Option("The service's default", ""), ...entries.map(([v, t]) => new Option(t, v)));
}

function renderStyles(styles) {
  const list = $("style-list");
  const still = matchMedia("(prefers-reduced-motion: reduce)").matches;
  list.replaceChildren();
  styles.forEach((style, index) => {
    const choice = document.createElement("div");
    choice.className = "choice";
    const input = Object.assign(document.createElement("input"), {
      type: "radio",
      name: "style",
      id: `style-${style}`,
      value: style,
      checked: style === "romantic" || (index === 0 && !styles.includes("romantic")),
    });
    const label = document.createElement("label");
    label.htmlFor = input.id;
    if (style in STYLE_NAMES) {
      const video = document.createElement("video");
      Object.assign(video, { muted: true, defaultMuted: true, loop: true, playsInline: true, preload: "auto" });
      video.autoplay = !still;
      video.setAttribute("aria-hidden", "true");
      video.src = new URL(`styles/${style}.mp4`, import.meta.url).href;
      if (still) {
        choice.addEventListener("pointerenter", () => video.play().catch(() => {}));
        choice.addEventListener("pointerleave", () => video.pause());
      }
      label.append(video);
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = STYLE_NAMES[style] || style;
    label.append(name);
    choice.append(input, label);
    list.append(choice);
  });
}

function renderShapes(shapes) {
  const list = $("shape-list");
  list.replaceChildren();
  Object.entries(shapes).forEach(([shape, size], index) => {
    const choice = document.createElement("div");
    choice.className = "choice";
    const input = Object.assign(document.createElement("input"), {
      type: "radio",
      name: "shape",
      id: `shape-${shape}`,
      value: size,
      checked: index === 0,
    });
    const label = document.createElement("label");
    label.htmlFor = input.id;
    const name = document.createElement("span");
    name.className = "name";
    const [title, ratio] = SHAPE_NAMES[shape] || [shape, ""];
    name.textContent = title;
    const pixels = document.createElement("span");
    pixels.className = "size";
    pixels.textContent = ratio ? `${ratio} · ${size}` : size;
    label.append(name, pixels);
    choice.append(input, label);
    list.append(choice);
  });
}

// ---- Photos and analysis -------------------------------------------------------------------------

// Each chosen photo of a person is an entry of state.photos[subject], in the order shown (and sent):
// {id, file, name, sha, image, analysis, error, checking, token, item, canvas, line, remove}.

// How many photos of one person the service takes (limits.max_photos_per_subject of the capabilities);
// a service that does not say takes one.
function photoLimit() {
  const most = Number(state.caps.limits?.max_photos_per_subject);
  return Number.isInteger(most) && most >= 1 ? most : 1;
}

function plural(count, one, many = `${one}s`) {
  return `${count} ${count === 1 ? one : many}`;
}

// [2] -> "photo 2", [1, 3] -> "photos 1 and 3", [1, 2, 3] -> "photos 1, 2 and 3"
function photoNumbers(numbers) {
  if (numbers.length === 1) return `photo ${numbers[0]}`;
  return `photos ${numbers.slice(0, -1).join(", ")} and ${numbers.at(-1)}`;
}

function firstSentence(text) {
  const end = text.indexOf(". ");
  return end < 0 ? text : text.slice(0, end + 1);
}

function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function setupPhotos() {
  for (const subject of ["a", "b"]) {
    for (const id of [`photo-${subject}`, `camera-${subject}`]) {
      $(id).addEventListener("change", (event) => {
        const files = Array.from(event.target.files);
        event.target.value = ""; // so that a removed photo can be chosen again
        addPhotos(subject, files);
      });
    }
    const drop = $(`drop-${subject}`);
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      addPhotos(subject, Array.from(event.dataTransfer?.files || []));
    });
    $(`consent-${subject}`).addEventListener("change", updateSubmit);
  }
}

// The pickers and their hints for the service's limit (called again when a refusal tells a lower one).
function renderPhotoLimit() {
  const most = photoLimit();
  for (const subject of ["a", "b"]) {
    $(`photo-${subject}`).multiple = most > 1;
    $(`photo-label-${subject}`).textContent = `${most > 1 ? "Photos" : "Photo"} of ${SUBJECT_NAMES[subject]}`;
    renderPhotos(subject);
  }
}

// Files from a picker or a drop, added after the photos already there, each checked at once. Files beyond
// the limit, and a file that is already among this person's photos, are not added: the person's status
// line says so. With a limit of one, a new photo replaces the old one.
async function addPhotos(subject, files) {
  files = files.filter(Boolean);
  if (!files.length) return;
  const who = SUBJECT_NAMES[subject];
  const most = photoLimit();
  const entries = state.photos[subject];
  if (most === 1) {
    for (const entry of entries.splice(0)) dropEntry(entry);
    files = files.slice(0, 1);
  }
  state.notice[subject] = null;
  let over = 0;
  const copies = [];
  for (const file of files) {
    if (entries.length >= most) {
      over++;
      continue;
    }
    let sha = null;
    try {
      sha = await sha256Hex(await file.arrayBuffer());
    } catch {
      // unreadable here: the check says so
    }
    if (entries.length >= most) {
      over++; // another pick or drop filled the list meanwhile
      continue;
    }
    if (sha && entries.some((entry) => entry.sha === sha)) {
      copies.push(file.name || "This photo");
      continue;
    }
    const entry = { id: ++state.added[subject], file, name: file.name || `${subject}.jpg`, sha, token: 0 };
    entries.push(entry);
    state.mismatch[subject] = null;
    checkPhoto(subject, entry);
  }
  const notes = [];
  if (over) {
    notes.push(
      `${capitalize(who)} has ${plural(most, "photo")}, the most the service takes: ` +
        `${plural(over, "photo")} ${over === 1 ? "was" : "were"} not added. Remove one to add another.`,
    );
  }
  if (copies.length) {
    notes.push(`${copies.join(", ")} ${copies.length === 1 ? "is" : "are"} already among the photos of ${who}.`);
  }
  state.notice[subject] = notes.length ? { text: notes.join(" "), bad: false } : null;
  renderPhotos(subject);
}

// POST /v1/analyses for one photo: its face box and landmarks, or why it cannot be used.
async function checkPhoto(subject, entry) {
  const token = ++entry.token;
  Object.assign(entry, { checking: true, analysis: null, error: null });
  renderPhotos(subject);
  const bitmap = entry.image
    ? Promise.resolve(entry.image)
    : createImageBitmap(entry.file, { imageOrientation: "from-image" }).catch(() => null);
  const body = new FormData();
  body.append("photo", entry.file, entry.name);
  body.append("subject", subject);
  let analysis = null;
  let error = null;
  try {
    analysis = await api("v1/analyses", { method: "POST", body });
  } catch (err) {
    error = err;
  }
  const image = await bitmap;
  if (!state.photos[subject].includes(entry)) {
    image?.close(); // removed meanwhile
    return;
  }
  if (token !== entry.token) return; // checked again meanwhile (a key was given)
  Object.assign(entry, { image, analysis, error, checking: false });
  renderPhotos(subject);
}

function dropEntry(entry) {
  entry.item?.remove();
  entry.image?.close();
  entry.image = null;
}

// The Remove button of a photo: it is no longer shown or sent. The focus goes to the photo that took its
// place in the list, else to the one before, else to the picker; the status line says what happened.
function removePhoto(subject, entry) {
  const entries = state.photos[subject];
  const index = entries.indexOf(entry);
  if (index < 0) return;
  entries.splice(index, 1);
  dropEntry(entry);
  state.mismatch[subject] = null;
  const left = entries.length ? ` ${plural(entries.length, "photo")} of ${SUBJECT_NAMES[subject]} left.` : "";
  state.notice[subject] = { text: `Photo ${index + 1} (${entry.name}) was removed.${left}`, bad: false };
  renderPhotos(subject);
  const next = entries[index] || entries[index - 1];
  (next ? next.remove : $(`photo-${subject}`)).focus();
}

// One person's photos as the page shows them: the thumbnails (kept, so the focus stays on a Remove
// button while a check ends), the large preview, the hint with the count, the status line, the submit.
function renderPhotos(subject) {
  const who = SUBJECT_NAMES[subject];
  const entries = state.photos[subject];
  const most = photoLimit();
  const list = $(`thumbs-${subject}`);
  entries.forEach((entry, index) => {
    if (!entry.item) list.append(photoItem(subject, entry)); // added last, so the list keeps their order
    renderItem(subject, entry, index + 1);
  });
  list.hidden = entries.length === 0;
  list.setAttribute("aria-label", `Photos of ${who}: ${entries.length} of ${most}`);
  $(`photos-hint-${subject}`).textContent =
    most > 1
      ? `Up to ${most} photos of this one person (${entries.length} chosen). More than one, from another ` +
        "angle or in other light, helps the video keep their likeness."
      : "One photo of this person.";
  drawLead(subject);
  setAnalysis(subject, ...photoSummary(subject));
  updateSubmit();
}

function photoItem(subject, entry) {
  const item = document.createElement("li");
  item.className = "thumb";
  const canvas = document.createElement("canvas");
  canvas.setAttribute("role", "img");
  canvas.hidden = true;
  const line = document.createElement("p");
  line.className = "thumb-state";
  const remove = document.createElement("button");
  remove.type = "button";
  remove.id = `remove-${subject}-${entry.id}`;
  remove.textContent = "Remove";
  remove.addEventListener("click", () => removePhoto(subject, entry));
  item.append(canvas, line, remove);
  Object.assign(entry, { item, canvas, line, remove, drawn: undefined }); // drawn: the analysis drawn
  return item;
}

// The photo in every pair that subject_photos_mismatch named, when there are several pairs: the odd one
// out (a stranger among three photos makes two pairs, and the other two are alike).
function oddOne(pairs) {
  const common = pairs.length > 1 ? pairs[0].filter((entry) => pairs.every((pair) => pair.includes(entry))) : [];
  return common.length === 1 ? common[0] : null;
}

// What a photo's thumbnail says of a mismatch: not like the others (the odd one), not like photos N (a
// pair), or nothing (the odd one is another photo, or there is no mismatch).
function unlike(subject, entry) {
  const pairs = state.mismatch[subject];
  if (!pairs) return null;
  const odd = oddOne(pairs);
  if (odd) return odd === entry ? "Does not look like the other photos." : null;
  const entries = state.photos[subject];
  const others = pairs
    .filter((pair) => pair.includes(entry))
    .map((pair) => entries.indexOf(pair[0] === entry ? pair[1] : pair[0]) + 1)
    .sort((x, y) => x - y);
  return others.length ? `Does not look like ${photoNumbers(others)}.` : null;
}

function renderItem(subject, entry, number) {
  const who = SUBJECT_NAMES[subject];
  const apart = unlike(subject, entry);
  let text = "Can be used.";
  let kind = "ok";
  if (entry.checking) [text, kind] = ["Checking…", "checking"];
  else if (entry.error) [text, kind] = [firstSentence(problemText(entry.error)), "bad"]; // all of it is above
  else if (number > photoLimit()) [text, kind] = [`One more than the service takes: remove it.`, "bad"];
  else if (apart) [text, kind] = [apart, "bad"];
  else if (entry.analysis.faces_found > 1) text = `Can be used: the largest of ${entry.analysis.faces_found} faces.`;
  entry.item.dataset.state = kind;
  entry.line.textContent = `Photo ${number}: ${text}`;
  entry.line.className = `thumb-state ${kind}`;
  entry.remove.setAttribute("aria-label", `Remove photo ${number} of ${who} (${entry.name})`);
  if (!entry.checking && entry.drawn !== entry.analysis) {
    drawPhoto(entry.canvas, entry.image, entry.analysis, 240);
    entry.drawn = entry.analysis;
  }
  entry.canvas.setAttribute(
    "aria-label",
    `Photo ${number} of ${who}, ${entry.name}` +
      (entry.analysis ? `, with the detected face box and ${entry.analysis.landmarks.length} landmarks` : ""),
  );
}

// The large preview: the first photo that can be used, else the first one checked.
function drawLead(subject) {
  const who = SUBJECT_NAMES[subject];
  const entries = state.photos[subject];
  const lead = entries.find((entry) => entry.analysis) || entries.find((entry) => !entry.checking);
  const canvas = $(`overlay-${subject}`);
  if (!lead || !drawPhoto(canvas, lead.image, lead.analysis, 720)) {
    canvas.hidden = true;
    delete canvas.dataset.landmarks;
    canvas.setAttribute("aria-label", `No photo of ${who} yet`);
    return;
  }
  const number = entries.indexOf(lead) + 1;
  canvas.setAttribute(
    "aria-label",
    lead.analysis
      ? `Photo ${number} of ${who} with the detected face box and ${lead.analysis.landmarks.length} landmarks`
      : `Photo ${number} of ${who}; it was refused`,
  );
}

// The person's status line, a live region: what is being checked, each refusal in plain words, the
// limit, the photos found unlike each other, or that the photos can be used. [text, kind].
function photoSummary(subject) {
  const who = SUBJECT_NAMES[subject];
  const entries = state.photos[subject];
  const most = photoLimit();
  const notice = state.notice[subject];
  const parts = notice ? [notice.text] : [];
  const checking = entries.filter((entry) => entry.checking).length;
  if (checking) {
    parts.push(entries.length === 1 ? "Checking the photo…" : `Checking ${checking} of ${entries.length} photos…`);
  }
  let bad = Boolean(notice?.bad);
  entries.forEach((entry, index) => {
    if (entry.checking || !entry.error) return;
    parts.push(entries.length === 1 ? problemText(entry.error) : `Photo ${index + 1}: ${problemText(entry.error)}`);
    bad = true;
  });
  if (entries.length > most) {
    parts.push(`The service takes at most ${plural(most, "photo")} of ${who}: remove ${entries.length - most}.`);
    bad = true;
  }
  if (state.mismatch[subject]) {
    parts.push(mismatchText(subject, state.mismatch[subject]));
    bad = true;
  }
  if (entries.length && !checking && !bad) {
    const faces = entries[0].analysis.faces_found;
    const more = faces > 1 ? ` ${faces} faces were found; the largest is used.` : "";
    parts.push(
      entries.length === 1
        ? `Face found: this photo can be used.${more}`
        : `A face was found in each of the ${entries.length} photos: they can be used.`,
    );
  }
  const kind = checking ? "checking" : bad ? "bad" : entries.length ? "ok" : "";
  return [parts.join(" "), kind];
}

// subject_photos_mismatch in plain words: the odd one out, else the pairs of photos the service found to
// be different people.
function mismatchText(subject, pairs) {
  const who = SUBJECT_NAMES[subject];
  const entries = state.photos[subject];
  const name = (entry) => `photo ${entries.indexOf(entry) + 1} (${entry.name})`;
  const odd = oddOne(pairs);
  if (odd) {
    return `${capitalize(name(odd))} does not look like the same person as the other photos of ${who}. ` +
      `Remove it, or use only photos of ${who}.`;
  }
  const listed = pairs.map(([one, other]) => `${name(one)} and ${name(other)}`).join("; ");
  return `These photos do not look like the same person: ${listed}. Use only photos of ${who}: remove the others.`;
}

function setAnalysis(subject, text, kind) {
  const line = $(`analysis-${subject}`);
  if (line.textContent !== text) line.textContent = text; // the same words are not announced again
  line.className = `analysis ${kind}`;
  line.dataset.state = kind || "none";
}

// A photo on a canvas at most `side` pixels wide or high, with the face box and the 68 landmarks the
// service found. False when there is nothing to draw (an unreadable file that was refused).
function drawPhoto(canvas, image, analysis, side) {
  if (!image && !analysis) {
    canvas.hidden = true;
    return false;
  }
  const width = analysis?.image_width || image.width;
  const height = analysis?.image_height || image.height;
  const scale = Math.min(1, side / Math.max(width, height));
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (image) ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  canvas.hidden = false;
  if (!analysis) {
    canvas.dataset.landmarks = "0";
    return true;
  }
  const line = Math.max(2, canvas.width / 180);
  const [x0, y0, x1, y1] = analysis.box.map((v) => v * scale);
  ctx.lineWidth = line + 2;
  ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.lineWidth = line;
  ctx.strokeStyle = "#f472b6";
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.fillStyle = "#22d3ee";
  const radius = Math.max(1.5, canvas.width / 260);
  for (const [x, y] of analysis.landmarks) {
    ctx.beginPath();
    ctx.arc(x * scale, y * scale, radius, 0, 2 * Math.PI);
    ctx.fill();
  }
  canvas.dataset.landmarks = String(analysis.landmarks.length);
  return true;
}

// ---- Submit --------------------------------------------------------------------------------------

function missing() {
  const reasons = [];
  const most = photoLimit();
  for (const subject of ["a", "b"]) {
    const who = SUBJECT_NAMES[subject];
    const entries = state.photos[subject];
    const refused = entries.flatMap((entry, index) => (entry.error && !entry.checking ? [index + 1] : []));
    const photos = entries.length === 1 ? `the photo of ${who} is` : `the photos of ${who} are`;
    if (!entries.length) reasons.push(`choose a photo of ${who}`);
    else if (entries.some((entry) => entry.checking)) reasons.push(`${photos} being checked`);
    else if (refused.length) {
      reasons.push(
        entries.length === 1
          ? `the photo of ${who} cannot be used`
          : `${photoNumbers(refused)} of ${who} cannot be used: remove ${refused.length === 1 ? "it" : "them"}`,
      );
    }
    if (entries.length > most) {
      reasons.push(`remove ${entries.length - most} of the photos of ${who} (at most ${most})`);
    }
    if (state.mismatch[subject]) reasons.push(`the photos of ${who} must all show ${who}`);
    if (!$(`consent-${subject}`).checked) reasons.push(`tick the consent for ${who}`);
  }
  return reasons;
}

function updateSubmit() {
  const reasons = missing();
  const button = $("submit");
  button.disabled = reasons.length > 0 || state.submitting;
  const hint = $("submit-hint");
  hint.classList.remove("bad");
  if (state.submitting) hint.textContent = "Sending…";
  else if (reasons.length) hint.textContent = `To make the video: ${reasons.join("; ")}.`;
  else hint.textContent = "Ready.";
}

function videoParams() {
  const params = {
    style: document.querySelector("input[name=style]:checked")?.value,
    intensity: $("intensity").value,
    seconds: $("seconds").value,
    size: $("size").value.trim() || document.querySelector("input[name=shape]:checked")?.value,
    fps: $("fps").value.trim(),
    seed: $("seed").value.trim(),
    background: $("background").value,
  };
  for (const name of ["backend", "quality", "lora"]) {
    if (!$(`${name}-field`).hidden) params[name] = $(name).value;
  }
  return Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined && v !== ""));
}

async function submit(event) {
  event.preventDefault();
  if (missing().length || state.submitting) return;
  const form = new FormData();
  const sent = {}; // the photos as sent: a refusal names them by their number, 1-based, in this order
  for (const subject of ["a", "b"]) {
    sent[subject] = [...state.photos[subject]];
    for (const entry of sent[subject]) form.append(`subject_${subject}`, entry.file, entry.name);
    form.append(`consent_${subject}`, "true");
    const reference = $(`consent-ref-${subject}`).value.trim();
    if (reference) form.append(`consent_ref_${subject}`, reference);
  }
  for (const [name, value] of Object.entries(videoParams())) form.append(name, value);
  state.submitting = true;
  updateSubmit();
  stats.submittedMs = performance.now();
  stats.firstEventMs = null;
  try {
    const job = await api("v1/videos", { method: "POST", body: form, headers: { "Idempotency-Key": randomToken() } });
    state.submitting = false;
    updateSubmit();
    openJob(job);
    loadVideos(true);
  } catch (error) {
    state.submitting = false;
    if (error instanceof ApiError) showRefusal(error, sent);
    updateSubmit();
    const hint = $("submit-hint");
    const who = SUBJECT_NAMES[error.problem?.subject];
    hint.textContent = `Not sent: ${who ? `${capitalize(who)}: ` : ""}${problemText(error)}`;
    hint.classList.add("bad");
  }
}

// A refusal of the submission, next to the person it names: the photos found to be different people,
// a photo refused now (its number in `errors`, or the person's only photo), more photos than the service
// takes (it says its limit), or anything else about that person as their status line.
function showRefusal(error, sent) {
  const { code, subject, errors = [] } = error.problem;
  if (code === "too_many_photos") {
    // The service's limit: its `limit` member, else read from the words of an older service.
    const said = [error.problem.detail, ...errors.map((e) => e.message)].join(" ");
    const most = Number(error.problem.limit ?? /at most (\d+)/.exec(said)?.[1]);
    if (most >= 1) state.caps = { ...state.caps, limits: { ...state.caps.limits, max_photos_per_subject: most } };
    renderPhotoLimit();
    return;
  }
  if (!(subject in SUBJECT_NAMES)) return;
  const present = (entry) => entry && state.photos[subject].includes(entry);
  if (code === "subject_photos_mismatch") {
    const pairs = errors
      .filter((e) => Array.isArray(e.photos))
      .map((e) => e.photos.map((number) => sent[subject][number - 1]))
      .filter((pair) => pair.length === 2 && pair.every(present));
    if (pairs.length) state.mismatch[subject] = pairs;
    else state.notice[subject] = { text: problemText(error), bad: true };
    renderPhotos(subject);
    return;
  }
  const number = errors.find((e) => Number.isInteger(e.photo))?.photo ?? (sent[subject].length === 1 ? 1 : null);
  const entry = number && sent[subject][number - 1];
  if (PHOTO_REFUSALS.has(code) && present(entry)) Object.assign(entry, { analysis: null, error });
  else state.notice[subject] = { text: problemText(error), bad: true };
  renderPhotos(subject);
}

// ---- Progress: the SSE stream, polling as the fallback --------------------------------------------

function openJob(job) {
  stopFollowing();
  state.job = job;
  state.resultFor = null;
  state.previewRevision = null;
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls = [];
  $("result").hidden = true;
  $("job-preview").hidden = true;
  $("job").hidden = false;
  $("job").dataset.events = "0";
  stats.events = 0;
  stats.polls = 0;
  stats.streams = 0;
  stats.seen = [];
  $("job-id").textContent = job.id;
  renderJob(job);
  $("job-title").focus();
  if (!TERMINAL.has(job.status)) follow(job.id);
}

function stopFollowing() {
  state.follow?.abort();
  state.follow = null;
}

// Server-sent events by fetch (EventSource cannot send the API key): one `job` event per change.
async function* sseEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}));
  let buffer = "";
  let event = { event: "message", data: [], id: null, retry: null };
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length || event.retry !== null) yield { ...event, data: event.data.join("\n") };
          event = { event: "message", data: [], id: null, retry: null };
          continue;
        }
        if (line.startsWith(":")) {
          stats.heartbeats++;
          continue;
        }
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") event.data.push(value);
        else if (field === "event") event.event = value;
        else if (field === "id" && !value.includes("\0")) event.id = value;
        else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
      }
    }
  } finally {
    reader.releaseLock?.();
  }
}

async function follow(id) {
  const control = new AbortController();
  state.follow = control;
  const { signal } = control;
  let lastId = null;
  let retryMs = 1000;
  let fruitless = 0;
  while (!signal.aborted) {
    let response = null;
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      response = await apiFetch(`v1/videos/${encodeURIComponent(id)}/events`, { headers, signal });
    } catch (error) {
      if (signal.aborted || (error instanceof ApiError && error.status === 401)) return;
    }
    const streaming = response?.ok && response.headers.get("content-type")?.startsWith("text/event-stream");
    if (!streaming) return poll(id, signal);
    stats.streams++;
    let received = 0;
    try {
      for await (const event of sseEvents(response.body, signal)) {
        if (event.retry !== null) retryMs = event.retry;
        if (event.id !== null) lastId = event.id;
        if (event.event === "error" && event.data) {
          // The job was erased while watched (not_found), or the stream cannot go on: say so, or poll.
          const problem = JSON.parse(event.data);
          if (problem.code === "not_found") return showGone(id);
          return poll(id, signal);
        }
        if (event.event !== "job" || !event.data) continue;
        received++;
        stats.events++;
        stats.firstEventMs ??= performance.now();
        $("job").dataset.events = String(stats.events);
        const job = JSON.parse(event.data);
        stats.seen.push(`${job.status}:${job.stage}:${job.progress}`);
        if (state.job?.id !== id) return;
        renderJob(job);
        if (TERMINAL.has(job.status)) return;
      }
    } catch {
      if (signal.aborted) return;
    }
    // The server ended the stream before the end (its time limit): resume after the last event.
    fruitless = received ? 0 : fruitless + 1;
    if (fruitless >= 3) return poll(id, signal);
    await sleep(retryMs, signal);
  }
}

async function poll(id, signal) {
  let wait = POLL_MS;
  while (!signal.aborted && state.job?.id === id) {
    try {
      const job = await api(`v1/videos/${encodeURIComponent(id)}`, { signal });
      stats.polls++;
      $("job").dataset.polls = String(stats.polls);
      renderJob(job);
      if (TERMINAL.has(job.status)) return;
      wait = POLL_MS;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && (error.status === 404 || error.status === 401)) {
        if (error.status === 404) showGone(id);
        return;
      }
      wait = Math.min(wait * 2, 8000);
    }
    await sleep(wait, signal);
  }
}

function formatSeconds(seconds) {
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  return `${Math.round(seconds / 60)} min`;
}

function renderJob(job) {
  if (state.job && state.job.id !== job.id) return;
  state.job = job;
  const section = $("job");
  section.dataset.status = job.status;
  let text = STATUS_WORDS[job.status] || job.status;
  if (job.status === "queued" || job.status === "in_progress") text += ` — stage: ${job.stage}, ${job.progress} %`;
  if (job.status === "failed" && job.error) text += `: ${problemText(new ApiError(job.error.status, job.error))}`;
  $("job-status").textContent = text;
  const queue = [];
  if (job.queue_position) queue.push(`Position in the queue: ${job.queue_position}`);
  if (job.eta_s !== null && job.eta_s !== undefined && !TERMINAL.has(job.status)) {
    queue.push(`about ${formatSeconds(job.eta_s)} left`);
  }
  $("job-queue").textContent = queue.join(" · ");
  const progress = $("job-progress");
  progress.value = job.status === "completed" ? 100 : job.progress;
  progress.setAttribute("aria-valuetext", `${progress.value} %`);
  const running = !TERMINAL.has(job.status);
  $("job-cancel").disabled = !running;
  if (running && job.progress_preview && job.progress_preview.revision !== state.previewRevision) {
    state.previewRevision = job.progress_preview.revision;
    showPreview(job.id, job.progress_preview.url);
  }
  if (!running) {
    $("job-preview").hidden = true;
    if (state.follow && state.job.id === job.id) state.follow = null;
  }
  if (job.status === "completed" && state.resultFor !== job.id) {
    state.resultFor = job.id;
    showResult(job);
  }
  markListed(job);
}

async function showPreview(id, url) {
  try {
    const blob = await apiBlob(url);
    if (state.job?.id !== id || TERMINAL.has(state.job.status)) return;
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(blob);
    const img = $("job-preview");
    img.src = state.previewUrl;
    img.hidden = false;
  } catch {
    // a preview is optional: the next one may come
  }
}

function showGone(id) {
  if (state.job?.id !== id) return;
  $("job-status").textContent = "This video was erased.";
  $("job").dataset.status = "erased";
  $("job-cancel").disabled = true;
}

// ---- Result --------------------------------------------------------------------------------------

function blobUrl(blob) {
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  return url;
}

async function showResult(job) {
  const id = job.id;
  const result = job.result;
  $("result").hidden = false;
  const isVideo = result?.output !== "image";
  $("result-video").hidden = !isVideo;
  $("download-video").hidden = !isVideo;
  renderQuality(result?.quality);
  renderProvenance(result?.provenance);
  $("report-status").textContent = "";
  try {
    const still = await apiBlob(`v1/videos/${encodeURIComponent(id)}/content?variant=image`);
    if (state.job?.id !== id) return;
    const url = blobUrl(still);
    $("result-still").src = url;
    $("result-video").poster = url;
    Object.assign($("download-image"), { href: url, download: `${id}.jpg` });
    if (isVideo) {
      const video = await apiBlob(`v1/videos/${encodeURIComponent(id)}/content?variant=video`);
      if (state.job?.id !== id) return;
      const videoUrl = blobUrl(video);
      $("result-video").src = videoUrl;
      Object.assign($("download-video"), { href: videoUrl, download: `${id}.mp4` });
    }
    $("result").dataset.loaded = "true";
  } catch (error) {
    $("job-status").textContent = `Done, but the files could not be loaded: ${problemText(error)}`;
  }
}

function renderProvenance(provenance) {
  const marks = [];
  if (provenance?.label) marks.push("a visible “AI-generated” label on every frame");
  if (provenance?.watermark) marks.push("an invisible watermark with the job id");
  if (provenance?.c2pa) marks.push("signed Content Credentials (C2PA) saying it was made by AI");
  $("provenance").textContent = marks.length
    ? `Made by AI, and it says so: ${marks.join(", ")} — check any copy under “Verify a file”.`
    : "Made by AI. This service was configured without AI marks on its outputs.";
}

function fixed(value, digits = 3) {
  return value === null || value === undefined ? null : Number(value).toFixed(digits);
}

function renderQuality(report) {
  const rows = [];
  if (report) {
    const dlib = String(report.similarity || "").includes("dlib");
    for (const s of report.subjects || []) {
      const measured = s.similarity_mean === null
        ? "face not found"
        : `mean ${fixed(s.similarity_mean)}, lowest ${fixed(s.similarity_min)}, seen in ${Math.round(s.visible_share * 100)} % of ${s.frames_checked} frames`;
      const limits = [`mean ≥ ${report.threshold}`];
      let pass = s.similarity_mean !== null && s.similarity_mean >= report.threshold;
      if (dlib) {
        limits.push(`lowest ≥ ${THRESHOLDS.similarity_min}`);
        pass = pass && s.similarity_min >= THRESHOLDS.similarity_min;
      }
      limits.push(`seen ≥ ${THRESHOLDS.visible_share * 100} %`);
      pass = pass && s.visible_share >= THRESHOLDS.visible_share;
      rows.push([`Identity, ${SUBJECT_NAMES[s.subject]}`, measured, limits.join(", "), pass]);
    }
    if (report.both_found !== null && report.both_found !== undefined) {
      rows.push([
        "Both people seen together",
        `in ${Math.round(report.both_found * 100)} % of the checked frames`,
        `≥ ${THRESHOLDS.both_found * 100} %`,
        report.both_found >= THRESHOLDS.both_found,
      ]);
    }
    const contact = report.contact;
    if (contact) {
      const d = contact.mouth_distance;
      rows.push([
        contact.target === "cheek" ? "Contact (mouth to cheek)" : "Contact (lips meet)",
        d === null ? "not measurable" : `${fixed(d, 2)} face widths apart at frame ${contact.frame}`,
        `≤ ${THRESHOLDS.mouth_distance}`,
        d === null ? null : d <= THRESHOLDS.mouth_distance,
      ]);
      if (contact.seam !== null && contact.seam !== undefined) {
        rows.push([
          "Seam where the faces meet",
          `${fixed(contact.seam, 2)} × the faces' own edges`,
          `≤ ${THRESHOLDS.seam}`,
          contact.seam <= THRESHOLDS.seam,
        ]);
      }
    }
    const flicker = report.flicker;
    if (flicker) {
      rows.push([
        "Background flicker",
        `mean ${fixed(flicker.mean, 2)}, p95 ${fixed(flicker.p95, 2)} luma levels`,
        `mean ≤ ${THRESHOLDS.flicker_mean}, p95 ≤ ${THRESHOLDS.flicker_p95}`,
        flicker.mean <= THRESHOLDS.flicker_mean && flicker.p95 <= THRESHOLDS.flicker_p95,
      ]);
    }
    const light = report.lighting;
    if (light) {
      const before = light.delta_e_input;
      const after = light.delta_e_output;
      const known = before !== null && after !== null;
      rows.push([
        "Lighting (skin tone ΔE)",
        known ? `${fixed(before, 1)} in the photos → ${fixed(after, 1)} in the video` : "not measurable",
        `after ≤ ${THRESHOLDS.lighting_ratio} × before, or ≤ ${THRESHOLDS.lighting_floor}`,
        known ? after <= THRESHOLDS.lighting_ratio * before || after <= THRESHOLDS.lighting_floor : null,
      ]);
    }
  }
  const body = $("quality-rows");
  body.replaceChildren(
    ...rows.map(([name, measured, limit, pass]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = name;
      const verdict = document.createElement("td");
      verdict.textContent = pass === null ? "—" : pass ? "passes" : "misses";
      if (pass !== null) verdict.className = pass ? "pass" : "fail";
      verdict.dataset.label = "Result";
      tr.append(th, cell(measured, "Measured"), cell(limit, "Threshold"), verdict);
      return tr;
    }),
  );
  $("quality-card").hidden = rows.length === 0;
}

function cell(text, label) {
  const td = document.createElement("td");
  td.textContent = text;
  td.dataset.label = label; // the column's name, shown before the value on narrow screens
  return td;
}

// ---- Cancel, erase, report ------------------------------------------------------------------------

async function cancelJob() {
  const job = state.job;
  if (!job) return;
  $("job-cancel").disabled = true;
  try {
    renderJob(await api(`v1/videos/${encodeURIComponent(job.id)}/cancel`, { method: "POST" }));
  } catch (error) {
    $("job-queue").textContent = problemText(error);
    if (!(error instanceof ApiError) || error.problem.code !== "job_finished") $("job-cancel").disabled = false;
  }
}

function confirmErase(id) {
  const dialog = $("confirm-delete");
  $("confirm-text").textContent =
    `This stops ${id} if it still runs and erases both photos, the video, the still and the job's record. It cannot be undone.`;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "erase"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

async function eraseJob(id, returnFocus) {
  if (!(await confirmErase(id))) {
    returnFocus?.focus();
    return;
  }
  try {
    await api(`v1/videos/${encodeURIComponent(id)}`, { method: "DELETE" });
    $("videos-status").textContent = `${id} and everything it kept were erased.`;
    document.querySelector(`#videos-list li[data-id="${CSS.escape(id)}"]`)?.remove();
    $("videos-empty").hidden = $("videos-list").children.length > 0;
    if (state.job?.id === id) {
      stopFollowing();
      state.job = null;
      $("job").hidden = true;
    }
    $("videos-title").setAttribute("tabindex", "-1");
    $("videos-title").focus();
  } catch (error) {
    $("videos-status").textContent = `Not erased: ${problemText(error)}`;
    returnFocus?.focus();
  }
}

async function sendReport(body, statusLine) {
  statusLine.textContent = "Sending…";
  try {
    const report = await api("v1/reports", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    statusLine.textContent = `Thank you. Report ${report.id} was received; the operator reviews it.`;
    statusLine.dataset.reportId = report.id;
    return true;
  } catch (error) {
    statusLine.textContent = `Not sent: ${problemText(error)}`;
    return false;
  }
}

function setupJobActions() {
  $("job-cancel").addEventListener("click", cancelJob);
  $("job-delete").addEventListener("click", () => state.job && eraseJob(state.job.id, $("job-delete")));
  const details = $("report-details");
  details.addEventListener("input", () => {
    $("report-count").textContent = `${details.value.length} / 1000`;
  });
  $("report-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!state.job) return;
    const body = { reason: $("report-reason").value, video_id: state.job.id };
    if (details.value.trim()) body.details = details.value.trim().slice(0, 1000);
    if (await sendReport(body, $("report-status"))) {
      details.value = "";
      $("report-count").textContent = "0 / 1000";
    }
  });
}

// ---- Your videos ---------------------------------------------------------------------------------

async function loadVideos(reset) {
  if (state.caps.api_key_required && !apiKey()) return;
  if (reset) state.cursor = null;
  const query = new URLSearchParams({ limit: "20" });
  if (state.cursor) query.set("cursor", state.cursor);
  try {
    const page = await api(`v1/videos?${query}`);
    const list = $("videos-list");
    if (reset) list.replaceChildren();
    for (const job of page.data) list.append(videoItem(job));
    state.cursor = page.next_cursor;
    $("videos-more").hidden = !page.has_more;
    $("videos-empty").hidden = list.children.length > 0;
    $("videos-status").textContent = "";
  } catch (error) {
    $("videos-status").textContent = `The list could not be loaded: ${problemText(error)}`;
  }
}

function videoItem(job) {
  const li = document.createElement("li");
  li.dataset.id = job.id;
  const what = document.createElement("span");
  what.className = "what";
  const id = document.createElement("span");
  id.className = "mono";
  id.textContent = job.id;
  const status = document.createElement("span");
  status.className = `status status-${job.status}`;
  status.textContent = job.status.replace("_", " ");
  const created = new Date(job.created_at).toLocaleString();
  what.append(id, ` · ${STYLE_NAMES[job.params.style] || job.params.style}, ${job.params.seconds} s · ${created} · `, status);
  const open = document.createElement("button");
  open.type = "button";
  open.textContent = "Open";
  open.setAttribute("aria-label", `Open ${job.id}`);
  open.addEventListener("click", async () => {
    try {
      openJob(await api(`v1/videos/${encodeURIComponent(job.id)}`));
    } catch (error) {
      $("videos-status").textContent = problemText(error);
    }
  });
  const erase = document.createElement("button");
  erase.type = "button";
  erase.className = "danger";
  erase.textContent = "Erase everything…";
  erase.setAttribute("aria-label", `Erase everything of ${job.id}…`);
  erase.addEventListener("click", () => eraseJob(job.id, erase));
  li.append(what, open, erase);
  return li;
}

function markListed(job) {
  const status = document.querySelector(`#videos-list li[data-id="${CSS.escape(job.id)}"] .status`);
  if (status) {
    status.className = `status status-${job.status}`;
    status.textContent = job.status.replace("_", " ");
  }
}

// ---- Verify a file -------------------------------------------------------------------------------

async function sha256Hex(buffer) {
  if (globalThis.crypto?.subtle) {
    const digest = await crypto.subtle.digest("SHA-256", buffer);
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return sha256Fallback(new Uint8Array(buffer)); // plain http from another host: no crypto.subtle
}

// FIPS 180-4 SHA-256, for pages served over plain http from a host other than localhost.
function sha256Fallback(bytes) {
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);
  const H = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const length = bytes.length;
  const padded = new Uint8Array(Math.ceil((length + 9) / 64) * 64);
  padded.set(bytes);
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
  view.setUint32(padded.length - 4, (length * 8) >>> 0);
  const W = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let offset = 0; offset < padded.length; offset += 64) {
    for (let i = 0; i < 16; i++) W[i] = view.getUint32(offset + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(W[i - 15], 7) ^ rotr(W[i - 15], 18) ^ (W[i - 15] >>> 3);
      const s1 = rotr(W[i - 2], 17) ^ rotr(W[i - 2], 19) ^ (W[i - 2] >>> 10);
      W[i] = (W[i - 16] + s0 + W[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, h] = H;
    for (let i = 0; i < 64; i++) {
      const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + W[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      [h, g, f, e, d, c, b, a] = [g, f, e, (d + t1) >>> 0, c, b, a, (t1 + t2) >>> 0];
    }
    [a, b, c, d, e, f, g, h].forEach((v, i) => {
      H[i] = (H[i] + v) >>> 0;
    });
  }
  return Array.from(H, (v) => v.toString(16).padStart(8, "0")).join("");
}
window.studio.sha256Fallback = sha256Fallback;

function definitions(entries) {
  const dl = document.createElement("dl");
  for (const [term, value] of entries) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dl.append(dt, dd);
  }
  return dl;
}

function verdictOf(report) {
  const c2pa = report.c2pa || {};
  const mark = report.watermark;
  const entries = [
    ["Made by AI", report.ai_generated ? "Yes: this file says it was generated by AI." : "Not that this file says."],
    [
      "Content Credentials (C2PA)",
      !c2pa.present
        ? "none"
        : `${c2pa.valid ? "present and valid" : "present but not valid"}${c2pa.trusted ? ", signer trusted" : ""}` +
          (c2pa.development_certificate ? ", signed with a development certificate (not trusted)" : ""),
    ],
  ];
  if (c2pa.signer || c2pa.issuer) entries.push(["Signed by", [c2pa.signer, c2pa.issuer].filter(Boolean).join(", ")]);
  if (c2pa.job_id) entries.push(["Job (C2PA)", c2pa.job_id]);
  if (c2pa.consent) {
    const consent = c2pa.consent;
    entries.push([
      "Consent (C2PA)",
      `${consent.attested ? `attested for ${consent.subjects} people` : "not attested"}: audit record ${consent.audit_record}, policy ${consent.policy_version}`,
    ]);
  }
  entries.push([
    "Watermark",
    mark?.job_id ? `${mark.job_id} (in ${mark.frames_matching} of ${mark.frames_checked} frames read)` : "none found",
  ]);
  if (c2pa.validation_errors?.length) entries.push(["Problems", c2pa.validation_errors.join("; ")]);
  return entries;
}

function setupVerify() {
  $("verify-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("verify-file").files[0];
    const out = $("verify-result");
    if (!file) {
      out.textContent = "Choose an MP4 or JPEG file first.";
      return;
    }
    out.textContent = "Checking…";
    delete out.dataset.aiGenerated;
    const buffer = await file.arrayBuffer();
    const [sha, answer] = await Promise.all([
      sha256Hex(buffer),
      api("v1/verify", {
        method: "POST",
        body: buffer,
        headers: { "Content-Type": file.type || "application/octet-stream" },
      }).catch((error) => error),
    ]);
    state.verifySha = sha;
    $("verify-sha").textContent = sha;
    $("verify-report").hidden = false;
    $("verify-report-status").textContent = "";
    if (answer instanceof Error) {
      out.textContent = `Could not verify: ${problemText(answer)}`;
      return;
    }
    out.replaceChildren(definitions(verdictOf(answer)));
    out.dataset.aiGenerated = String(answer.ai_generated);
  });
  $("verify-report").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!state.verifySha) return;
    const body = { reason: $("verify-reason").value, file_sha256: state.verifySha };
    const details = $("verify-details").value.trim();
    if (details) body.details = details.slice(0, 1000);
    if (await sendReport(body, $("verify-report-status"))) $("verify-details").value = "";
  });
}

// ---- Start ---------------------------------------------------------------------------------------

async function start() {
  setupKey();
  setupPhotos();
  setupJobActions();
  setupVerify();
  $("create").addEventListener("submit", submit);
  $("intensity").addEventListener("input", () => {
    $("intensity-value").textContent = Number($("intensity").value).toFixed(2);
  });
  $("videos-refresh").addEventListener("click", () => loadVideos(true));
  $("videos-more").addEventListener("click", () => loadVideos(false));
  await loadCapabilities();
  if (apiKey()) $("key-change").hidden = false;
  if (state.caps.api_key_required && !apiKey()) askForKey(null);
  updateSubmit();
  await loadVideos(true);
  document.body.dataset.ready = "true";
}

start();
