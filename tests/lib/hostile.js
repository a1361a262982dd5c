'use strict';
/*
 * hostile.js - raw-request helpers shared by the tests of hostile input
 * (body-framing, control-bytes, encoded-ids, oversized-input, slow-clients,
 * broken-upstream-answers, credential-headers, hop-by-hop, connection-state):
 * request heads written byte for byte, sockets that record their close, and
 * a watch on what the mock upstream received or refused.
 */
const net = require('node:net');

/* A socket to the proxy that records when it is closed. */
function openSocket(port) {
	const sock = net.connect(port, '127.0.0.1');
	const st = { sock, data: '', closedAt: null, t0: Date.now() };
	st.connected = new Promise((resolve, reject) => {
		sock.once('connect', resolve);
		sock.once('error', reject);
	});
	st.closed = new Promise((resolve) => {
		sock.on('close', () => { st.closedAt = Date.now(); resolve(); });
	});
	sock.on('data', (d) => { st.data += d.toString('latin1'); });
	sock.on('error', () => { /* close follows */ });
	return st;
}

/* A request head; lines are joined with CRLF, the blank line added. */
function head(port, method, target, lines = []) {
	return `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
		lines.map((l) => l + '\r\n').join('') + '\r\n';
}

function chunked(text) {
	const b = Buffer.from(text);
	return `${b.length.toString(16)}\r\n${text}\r\n0\r\n\r\n`;
}

/* Raw request heads and bodies for a create, so header tricks are byte-exact. */
const CREATE_BODY = JSON.stringify({ model: 'gpt-4o', input: 'hostile' });

function upSaw(up) {
	return up.requests.map((r) => `${r.method} ${r.url}`).join(', ') || 'nothing';
}

/*
 * Record what the upstream's HTTP parser threw away (a header it refused,
 * e.g. a bare CR) and every raw header list it accepted, so that "nothing
 * forwarded" also covers requests the fake could not parse.
 */
function watchUpstream(up) {
	const w = { clientErrors: [], raw: [] };
	up.server.on('clientError', (err, sock) => {
		w.clientErrors.push(`${err.code}: ${err.rawPacket ? JSON.stringify(err.rawPacket.toString('latin1').slice(0, 300)) : ''}`);
		sock.destroy();
	});
	const prev = up.override;
	up.override = (req, res, body) => {
		w.raw.push(req.rawHeaders);
		return prev ? prev(req, res, body) : false;
	};
	return w;
}

module.exports = { openSocket, head, chunked, CREATE_BODY, upSaw, watchUpstream };
