// The gateway's demo page: a video call between tabs or machines, using the
// SDK served at /sdk/pantheon.js. Each tile shows the peer's transport and its
// signaling latency (the round trip of a `ping` to its gateway), which every
// participant publishes in its room `meta`.
//
// URL parameters fill the form: ?room=demo&name=ann&transport=websocket&join=1
import { connect, linkPeer } from '/sdk/pantheon.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const k of ['room', 'name', 'transport']) if (params.get(k)) $(k).value = params.get(k);
if (!$('name').value) $('name').value = `guest-${Math.random().toString(36).slice(2, 6)}`;

const NAMES = { webtransport: 'WebTransport', websocket: 'WebSocket' };
const demo = { client: null, room: null, links: new Map(), tiles: new Map(), local: null, rtt: null, sdk: { connect, linkPeer } };
window.demo = demo;

function log(text) {
  const line = `${new Date().toLocaleTimeString()} ${text}\n`;
  $('log').textContent = line + $('log').textContent.slice(0, 4000);
}

function tile(id, label) {
  let t = demo.tiles.get(id);
  if (!t) {
    const el = document.createElement('div');
    el.className = 'tile';
    el.innerHTML = '<video autoplay playsinline></video><div class="label"><span class="state"></span><span class="text"></span></div>';
    $('grid').append(el);
    t = { el, video: el.querySelector('video'), text: el.querySelector('.text'), state: el.querySelector('.state') };
    demo.tiles.set(id, t);
  }
  if (label !== undefined) t.text.textContent = label;
  return t;
}

function describe(meta) {
  const parts = [meta.name || 'anonymous'];
  if (meta.transport) parts.push(NAMES[meta.transport] || meta.transport);
  if (typeof meta.rtt_ms === 'number') parts.push(`${meta.rtt_ms} ms signaling RTT`);
  return parts.join(' · ');
}

function myMeta() {
  const c = demo.client;
  return { name: $('name').value, transport: c.transport, rtt_ms: demo.rtt, server: c.server };
}

function showStatus() {
  const c = demo.client;
  if (!c) return;
  $('status').innerHTML = '';
  const b = (t) => Object.assign(document.createElement('b'), { textContent: t });
  $('status').append(
    'State ', b(c.state), ' · transport ', b(NAMES[c.transport] || '—'), ' · gateway ', b(c.server || '—'),
    ' · signaling RTT ', b(demo.rtt === null ? '…' : `${demo.rtt} ms`), ' · peer ', b(c.peer),
  );
  tile('local', `${describe(myMeta())} (you)`);
}

function addPeer(peer, meta) {
  if (demo.links.has(peer)) return;
  const link = linkPeer(demo.client, demo.room, peer);
  for (const track of demo.local.getTracks()) link.pc.addTrack(track, demo.local);
  const t = tile(peer, describe(meta));
  link.pc.ontrack = (ev) => {
    if (t.video.srcObject !== ev.streams[0]) t.video.srcObject = ev.streams[0];
  };
  const onState = () => { t.state.textContent = link.pc.connectionState; };
  link.pc.addEventListener('connectionstatechange', onState);
  onState();
  demo.links.set(peer, link);
  log(`peer ${meta.name || peer} joined`);
}

function removePeer(peer) {
  demo.links.get(peer)?.close();
  demo.links.delete(peer);
  demo.tiles.get(peer)?.el.remove();
  demo.tiles.delete(peer);
}

async function measure() {
  const c = demo.client;
  if (!c || c.state !== 'open') return;
  try {
    demo.rtt = Math.round(await c.ping());
    showStatus();
    await c.update(demo.room, myMeta());
  } catch (e) {
    log(`ping: ${e.message}`);
  }
}

/** Camera and microphone; the camera alone; else a drawn test pattern (no devices). */
async function localMedia() {
  for (const c of [{ video: { width: 320, height: 240 }, audio: true }, { video: { width: 320, height: 240 } }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(c);
    } catch (e) {
      log(`getUserMedia ${JSON.stringify(c)}: ${e.message}`);
    }
  }
  const canvas = Object.assign(document.createElement('canvas'), { width: 320, height: 240 });
  const g = canvas.getContext('2d');
  setInterval(() => {
    g.fillStyle = `hsl(${(Date.now() / 20) % 360} 60% 45%)`;
    g.fillRect(0, 0, 320, 240);
    g.fillStyle = 'white';
    g.font = '28px sans-serif';
    g.fillText($('name').value, 20, 130);
  }, 100);
  return canvas.captureStream(10);
}

async function join(ev) {
  ev?.preventDefault();
  $('go').disabled = true;
  try {
    demo.room = $('room').value;
    demo.local ??= await localMedia();
    const t = tile('local');
    t.video.muted = true;
    t.video.srcObject = demo.local;
    const c = await connect(location.origin, { transport: $('transport').value, certificateHash: 'fetch' });
    demo.client = c;
    c.on('state', (s) => {
      showStatus();
      log(`state ${s.state}${s.state === 'open' ? ` over ${NAMES[s.transport]} to ${s.server}${s.resumed ? ' (resumed)' : ''}` : ''}`);
      if (s.state === 'open') void measure();
    });
    c.on('peer_joined', (p) => p.room === demo.room && addPeer(p.peer, p.meta));
    c.on('peer_updated', (p) => p.room === demo.room && tile(p.peer, describe(p.meta)));
    c.on('peer_left', (p) => {
      if (p.room !== demo.room) return;
      removePeer(p.peer);
      log(`peer ${p.peer} left (${p.reason})`);
    });
    c.on('rejoined', (r) => {
      // A new session (the old one expired): links to the old peer id are gone.
      for (const peer of [...demo.links.keys()]) removePeer(peer);
      for (const p of r.peers) addPeer(p.peer, p.meta);
    });
    const peers = await c.join(demo.room, myMeta());
    for (const p of peers) addPeer(p.peer, p.meta);
    showStatus();
    log(`joined ${demo.room} over ${NAMES[c.transport]} (${peers.length} other${peers.length === 1 ? '' : 's'})`);
    demo.timer = setInterval(measure, 3000);
    void measure();
    $('hangup').disabled = false;
  } catch (e) {
    log(`join failed: ${e.message}`);
    $('status').textContent = `Could not join: ${e.message}`;
    $('go').disabled = false;
  }
}

function hangup() {
  clearInterval(demo.timer);
  for (const peer of [...demo.links.keys()]) removePeer(peer);
  demo.client?.close();
  demo.client = null;
  $('status').textContent = 'Left the room.';
  $('hangup').disabled = true;
  $('go').disabled = false;
}

$('join').addEventListener('submit', join);
$('hangup').addEventListener('click', hangup);
if (params.get('join') === '1') void join();
