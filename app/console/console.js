// The Vocalis console: talk to a session from the browser, watch its events, browse the recorded sessions.
// No framework and no build: modules served as they are.
import { Microphone, Player, RATE, fromBase64, toBase64 } from "/console/audio.js";
import { WebRtcTransport, WebSocketTransport } from "/console/transports.js";

const $ = (selector) => document.querySelector(selector);
const form = $("#settings");
const MAX_EVENT_ROWS = 3000;
const FALLBACK_VOICES = ["jm_kumo", "jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "alloy", "marin"];
const FALLBACK_STT = ["whisper-base", "whisper-tiny.en"];
const DEFAULT_VOICE = "jm_kumo"; // the server's default, and the most intelligible of the bundled voices

// --- what the user chose --------------------------------------------------------------------------------------

function settings() {
  return Object.fromEntries(new FormData(form));
}

function apiKey() {
  return settings().api_key.trim();
}

// The GA session configuration the settings describe.
function sessionConfig() {
  const s = settings();
  let turnDetection = null;
  if (s.turn_detection === "server_vad") {
    turnDetection = {
      type: "server_vad",
      silence_duration_ms: Number(s.silence_duration_ms),
      threshold: Number(s.threshold),
    };
  } else if (s.turn_detection === "semantic_vad") {
    turnDetection = { type: "semantic_vad", eagerness: s.eagerness };
  }
  const input = {
    format: { type: "audio/pcm", rate: RATE },
    transcription: { model: s.transcription_model },
    turn_detection: turnDetection,
  };
  if (s.mode === "transcription") return { type: "transcription", audio: { input } };
  const session = { type: "realtime", audio: { input, output: { voice: s.voice } } };
  if (s.instructions.trim()) session.instructions = s.instructions.trim();
  return session;
}

function showRelevantSettings() {
  const s = settings();
  for (const label of form.querySelectorAll("[data-for]")) {
    const wanted = label.dataset.for;
    label.hidden = wanted === "conversation" ? s.mode !== "conversation" : s.turn_detection !== wanted;
  }
}

function authHeaders() {
  return apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {};
}

async function fillChoices() {
  let voices = FALLBACK_VOICES;
  let stt = FALLBACK_STT;
  try {
    const response = await fetch("/v1/models", { headers: authHeaders() });
    if (response.ok) {
      const models = (await response.json()).data;
      const of = (kind) => models.filter((m) => m.kind === kind).map((m) => m.id);
      if (of("voice").length) voices = of("voice");
      if (of("transcription").length) stt = of("transcription");
    }
  } catch {
    // the defaults above are what the bundled models offer
  }
  form.voice.replaceChildren(...voices.map((id) => new Option(id, id)));
  if (voices.includes(DEFAULT_VOICE)) form.voice.value = DEFAULT_VOICE;
  form.transcription_model.replaceChildren(...stt.map((id) => new Option(id, id)));
}

// --- the event panel -----------------------------------------------------------------------------------------

const AUDIO_EVENTS = /(\.audio\.delta|output_audio\.delta|input_audio_buffer\.append)$/;
let connectedAt = 0;

// An event as shown: audio payloads are summarised, not printed.
function shown(event) {
  const copy = { ...event };
  for (const field of ["audio", "delta"]) {
    if (AUDIO_EVENTS.test(event.type) && typeof copy[field] === "string") {
      copy[field] = `<${copy[field].length} base64 chars>`;
    }
  }
  return JSON.stringify(copy, null, 2);
}

function logEvent(direction, event) {
  const row = document.createElement("li");
  row.className = direction + (event.type === "error" ? " error" : "");
  row.dataset.type = event.type;
  const time = ((performance.now() - connectedAt) / 1000).toFixed(3).padStart(8);
  row.innerHTML = `<span class="time"></span> <span class="dir"></span> <span class="type"></span>`;
  row.querySelector(".time").textContent = time;
  row.querySelector(".dir").textContent = direction === "client" ? "↑" : "↓";
  row.querySelector(".type").textContent = event.type;
  row.onclick = () => {
    const open = row.querySelector("pre");
    if (open) open.remove();
    else row.appendChild(Object.assign(document.createElement("pre"), { textContent: shown(event) }));
  };
  applyFilter(row);
  const list = $("#event-list");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.appendChild(row);
  if (list.children.length > MAX_EVENT_ROWS) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function applyFilter(row) {
  const text = $("#event-filter").value.trim();
  const hideAudio = $("#hide-audio").checked && AUDIO_EVENTS.test(row.dataset.type);
  row.hidden = hideAudio || (text !== "" && !row.dataset.type.includes(text));
}

// --- the transcript and the latency of each turn ---------------------------------------------------------------

function turn(itemId, role) {
  let element = document.getElementById(`item-${itemId}`);
  if (!element) {
    element = document.createElement("div");
    element.id = `item-${itemId}`;
    element.className = `turn ${role} partial`;
    element.innerHTML = `<span class="who"></span><span class="text"></span>`;
    element.querySelector(".who").textContent = role;
    $("#transcript").appendChild(element);
    $("#transcript").scrollTop = $("#transcript").scrollHeight;
  }
  return element;
}

function write(itemId, role, text, { append = false, final = false } = {}) {
  const element = turn(itemId, role);
  const span = element.querySelector(".text");
  span.textContent = append ? span.textContent + text : text;
  if (final) element.classList.remove("partial");
  if (final && !span.textContent) span.textContent = "(interrupted before a word)";
}

const latencies = new Map(); // item id -> { stoppedAt, transcriptMs, audioMs, row }
let awaitingAudio = null; // the user turn whose answer's first audio is still to come
// The assistant item whose audio is still arriving: the user who speaks now cuts it, even in a moment when all that
// came of it has played (synthesis slower than real time leaves such gaps).
let answering = null;

function latencyRow(itemId) {
  let entry = latencies.get(itemId);
  if (!entry) {
    const row = $("#latency tbody").insertRow();
    row.insertCell().textContent = latencies.size + 1;
    row.insertCell();
    row.insertCell();
    entry = { stoppedAt: performance.now(), row };
    latencies.set(itemId, entry);
  }
  return entry;
}

function noteLatency(itemId, column) {
  const entry = latencies.get(itemId);
  if (!entry || entry[column] !== undefined) return;
  entry[column] = Math.round(performance.now() - entry.stoppedAt);
  entry.row.cells[column === "transcriptMs" ? 1 : 2].textContent = entry[column];
}

// --- the session ---------------------------------------------------------------------------------------------

let transport = null;
let context = null; // the 24 kHz AudioContext of the WebSocket transport
let microphone = null;
let player = null;
let talking = false;

function setStatus(text, state) {
  const status = $("#status");
  status.textContent = text;
  status.dataset.state = state;
}

function send(event) {
  logEvent("client", event);
  transport.send(event);
}

function onServerEvent(event) {
  logEvent("server", event);
  switch (event.type) {
    case "session.created":
      setStatus(`connected over ${transport.kind}: ${event.session.id}`, "connected");
      document.body.dataset.session = event.session.id;
      break;
    case "input_audio_buffer.speech_started":
      turn(event.item_id, "user");
      if (player?.playing || answering !== null) bargeIn();
      break;
    case "input_audio_buffer.speech_stopped":
      latencyRow(event.item_id);
      awaitingAudio = event.item_id;
      break;
    case "conversation.item.input_audio_transcription.delta":
      write(event.item_id, "user", event.delta, { append: true });
      break;
    case "conversation.item.input_audio_transcription.completed":
      write(event.item_id, "user", event.transcript, { final: true });
      noteLatency(event.item_id, "transcriptMs");
      break;
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta":
      write(event.item_id, "assistant", event.delta, { append: true });
      break;
    case "response.output_audio_transcript.done":
    case "response.output_text.done":
      write(event.item_id, "assistant", event.transcript ?? event.text, { final: true });
      break;
    case "response.output_audio.delta":
      firstAudio();
      answering = event.item_id;
      player?.play(event.item_id, fromBase64(event.delta));
      document.body.dataset.playedMs = Math.round(player?.playedMs ?? 0);
      break;
    case "output_audio_buffer.started": // WebRTC: the answer's audio began on the track
      firstAudio();
      break;
    case "response.done":
      answering = null;
      break;
    case "conversation.item.truncated":
      document.getElementById(`item-${event.item_id}`)?.classList.add("truncated");
      break;
  }
}

function firstAudio() {
  if (awaitingAudio !== null) noteLatency(awaitingAudio, "audioMs");
  awaitingAudio = null;
}

// The user spoke over the answer: stop it where it is, and tell the server how much of it was heard, so the
// conversation holds what the user actually heard.
function bargeIn() {
  answering = null;
  const cut = player.stop();
  if (cut) send({ type: "conversation.item.truncate", item_id: cut.itemId, content_index: 0, audio_end_ms: cut.heardMs });
}

async function connect() {
  const session = sessionConfig();
  const chosen = settings().transport;
  const candidates = [];
  if (chosen !== "websocket" && WebRtcTransport.available()) candidates.push(WebRtcTransport);
  if (chosen !== "webrtc") candidates.push(WebSocketTransport);
  setStatus("connecting…", "connecting");
  connectedAt = performance.now();
  let lastError = new Error("this browser has no WebRTC");
  for (const Transport of candidates) {
    const attempt = new Transport(onServerEvent, (why) => disconnected(why));
    try {
      await attempt.open(session, apiKey());
      transport = attempt;
      break;
    } catch (error) {
      lastError = error;
      attempt.close();
      logEvent("client", { type: `(${attempt.kind} failed: ${error.message})` });
    }
  }
  if (!transport) {
    setStatus(`could not connect: ${lastError.message}`, "error");
    return;
  }
  document.body.dataset.transport = transport.kind;
  if (transport.kind === "websocket") {
    context = new AudioContext({ sampleRate: RATE });
    player = new Player(context);
    microphone = new Microphone(context);
  }
  // The key was bound to this configuration already; saying it again makes it the session's whatever minted it.
  send({ type: "session.update", session });
  $("#connect").textContent = "Disconnect";
  $("#mic").disabled = false;
  $("#commit").disabled = false;
}

function disconnected(why) {
  stopTalking();
  transport = null;
  player?.stop();
  context?.close();
  context = player = microphone = null;
  setStatus(why, "idle");
  $("#connect").textContent = "Connect";
  $("#mic").disabled = true;
  $("#commit").disabled = true;
}

async function startTalking() {
  talking = true;
  $("#mic").setAttribute("aria-pressed", "true");
  if (transport.kind === "webrtc") {
    await transport.talk(true);
    return;
  }
  await context.resume();
  await microphone.start((piece) => {
    if (talking && transport) send({ type: "input_audio_buffer.append", audio: toBase64(piece) });
  });
}

function stopTalking() {
  talking = false;
  $("#mic").setAttribute("aria-pressed", "false");
  if (transport?.kind === "webrtc") transport.talk(false);
  microphone?.stop();
}

// Without turn detection the user ends the turn: commit it, and in a conversation ask for the answer.
function sendTurn() {
  send({ type: "input_audio_buffer.commit" });
  if (settings().mode === "conversation") send({ type: "response.create" });
}

// --- recorded sessions -----------------------------------------------------------------------------------------

const EXPORTS = [
  ["SRT", "srt"],
  ["VTT", "vtt"],
  ["Markdown", "md"],
  ["JSONL", "jsonl"],
  ["WAV (zip)", "wav"],
];

async function showSessions() {
  const list = $("#session-list");
  const response = await fetch("/v1/sessions", { headers: authHeaders() });
  if (!response.ok) {
    list.textContent = `Could not list sessions (${response.status}).`;
    return;
  }
  const sessions = (await response.json()).data.sort((a, b) => b.started_at_ms - a.started_at_ms);
  list.replaceChildren(...sessions.map(sessionCard));
  if (!sessions.length) list.textContent = "No sessions recorded yet.";
}

function sessionCard(summary) {
  const card = document.createElement("article");
  card.className = "session";
  card.dataset.session = summary.session_id;
  const key = apiKey() ? `&api_key=${encodeURIComponent(apiKey())}` : "";
  const base = `/v1/sessions/${encodeURIComponent(summary.session_id)}/export?format=`;
  card.innerHTML = `<h3></h3><div class="figures"></div><ol class="utterances"></ol><div class="links"></div>`;
  card.querySelector("h3").textContent = `${summary.session_id} · ${summary.session_type} · ${summary.state}`;
  const started = new Date(summary.started_at_ms).toLocaleString();
  const wpm = summary.words_per_minute ?? "–";
  card.querySelector(".figures").textContent =
    `${started} · ${(summary.duration_ms / 1000).toFixed(1)} s · ${summary.turns} turns · ` +
    `${summary.words} words · ${wpm} words/min · talk ${(summary.talk_ms / 1000).toFixed(1)} s`;
  card.querySelector(".utterances").replaceChildren(
    ...summary.utterances.map((u) => {
      const line = document.createElement("li");
      line.textContent = `${u.speaker}: ${u.text ?? "…"}`;
      return line;
    }),
  );
  card.querySelector(".links").replaceChildren(
    ...EXPORTS.map(([label, format]) =>
      Object.assign(document.createElement("a"), { href: base + format + key, textContent: label, download: "" }),
    ),
  );
  return card;
}

// --- wiring ------------------------------------------------------------------------------------------------------

function showView(name) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== name;
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.view === name);
  }
  if (name === "sessions") showSessions();
}

form.addEventListener("change", showRelevantSettings);
$("#connect").onclick = () => (transport ? transport.close() || disconnected("disconnected") : connect());
$("#mic").onclick = () => (talking ? stopTalking() : startTalking());
$("#commit").onclick = sendTurn;
$("#event-filter").oninput = () => document.querySelectorAll("#event-list li").forEach(applyFilter);
$("#hide-audio").onchange = () => document.querySelectorAll("#event-list li").forEach(applyFilter);
$("#refresh-sessions").onclick = showSessions;
for (const button of document.querySelectorAll("nav button")) button.onclick = () => showView(button.dataset.view);
const wanted = new URLSearchParams(location.search);
for (const [name, value] of wanted) if (form[name]) form[name].value = value; // e.g. ?transport=websocket
showRelevantSettings();
fillChoices().then(() => {
  for (const [name, value] of wanted) if (form[name]) form[name].value = value;
});
// For tests and the curious: what the page heard.
window.vocalis = {
  heard: async () => (transport?.kind === "webrtc" ? transport.heard() : { playedMs: player?.playedMs ?? 0 }),
};
