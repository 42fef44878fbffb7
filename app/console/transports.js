// The two ways a browser reaches a realtime session, as OpenAI's browser clients use them:
//  - WebRTC: mint a short-lived key (POST /v1/realtime/client_secrets), then POST the SDP offer to
//    /v1/realtime/calls with it; events on the `oai-events` data channel, audio on the tracks.
//  - WebSocket: /v1/realtime, the key (when the server wants one) in the `openai-insecure-api-key.` subprotocol,
//    audio as base64 pcm16 in the events.
// Both give the page the same thing: `send(event)`, server events through `onEvent`, `close()`.

async function failure(response) {
  const body = await response.text();
  try {
    return new Error(`${response.status}: ${JSON.parse(body).error.message}`);
  } catch {
    return new Error(`${response.status}: ${body || response.statusText}`);
  }
}

// A key for exactly one connection, bound to `session`. Without a server key the server still mints one.
export async function mintKey(session, apiKey) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const response = await fetch("/v1/realtime/client_secrets", {
    method: "POST",
    headers,
    body: JSON.stringify({ session }),
  });
  if (!response.ok) throw await failure(response);
  return (await response.json()).value;
}

export class WebSocketTransport {
  kind = "websocket";

  constructor(onEvent, onClose) {
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.socket = null;
  }

  async open(session, apiKey) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const intent = session.type === "transcription" ? "?intent=transcription" : "";
    // The key goes where a browser can put it; the server then answers with the `realtime` subprotocol.
    const protocols = apiKey ? ["realtime", `openai-insecure-api-key.${await mintKey(session, apiKey)}`] : [];
    const socket = new WebSocket(`${scheme}://${location.host}/v1/realtime${intent}`, protocols);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error("the WebSocket did not open"));
    });
    socket.onmessage = (message) => this.onEvent(JSON.parse(message.data));
    socket.onclose = (close) => this.onClose(`closed (${close.code}${close.reason ? ": " + close.reason : ""})`);
    this.socket = socket;
  }

  send(event) {
    this.socket.send(JSON.stringify(event));
  }

  close() {
    this.socket?.close(1000);
  }
}

export class WebRtcTransport {
  kind = "webrtc";

  constructor(onEvent, onClose) {
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.peer = null;
    this.channel = null;
    this.sender = null;
    this.microphone = null; // the track sent to the server; enabled while the user talks
    this.speaker = new Audio();
    this.speaker.autoplay = true;
  }

  static available() {
    return typeof RTCPeerConnection !== "undefined" && !!navigator.mediaDevices?.getUserMedia;
  }

  async open(session, apiKey) {
    const key = await mintKey(session, apiKey);
    const peer = new RTCPeerConnection(); // host candidates: the server is reached directly, no STUN
    this.peer = peer;
    peer.ontrack = (track) => {
      this.speaker.srcObject = track.streams[0] ?? new MediaStream([track.track]);
    };
    // The microphone joins the offer's audio line when the user first talks: no prompt before that.
    this.sender = peer.addTransceiver("audio", { direction: "sendrecv" }).sender;
    const channel = peer.createDataChannel("oai-events");
    this.channel = channel;
    channel.onmessage = (message) => this.onEvent(JSON.parse(message.data));
    const opened = new Promise((resolve, reject) => {
      channel.onopen = resolve;
      channel.onerror = () => reject(new Error("the data channel did not open"));
    });
    await peer.setLocalDescription(await peer.createOffer());
    await gathered(peer);
    const response = await fetch("/v1/realtime/calls", {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${key}` },
      body: peer.localDescription.sdp,
    });
    if (!response.ok) throw await failure(response);
    await peer.setRemoteDescription({ type: "answer", sdp: await response.text() });
    await opened;
    channel.onclose = () => this.onClose("closed");
  }

  async talk(on) {
    if (on && !this.microphone) {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true } });
      this.microphone = stream.getAudioTracks()[0];
      await this.sender.replaceTrack(this.microphone);
    }
    if (this.microphone) this.microphone.enabled = on;
  }

  send(event) {
    this.channel.send(JSON.stringify(event));
  }

  // What the page has received and played on the audio track (getStats' inbound audio), for the latency table
  // and for tests.
  async heard() {
    if (!this.peer) return null;
    for (const report of (await this.peer.getStats()).values()) {
      if (report.type === "inbound-rtp" && report.kind === "audio") {
        return { packets: report.packetsReceived, energy: report.totalAudioEnergy ?? 0 };
      }
    }
    return null;
  }

  close() {
    this.channel?.close();
    this.microphone?.stop();
    this.peer?.close();
    this.speaker.srcObject = null;
  }
}

// The server takes no trickled candidates: the offer goes out with all of them (host ones come at once).
function gathered(peer) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (peer.iceGatheringState === "complete") resolve();
    };
    peer.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 2000);
  });
}
