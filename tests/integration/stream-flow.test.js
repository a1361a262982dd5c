'use strict';
// Streams under real conditions: a slow reader holds the upstream back
// instead of growing the proxy's memory; a client that leaves ends its
// upstream transfer; an upstream that is cut or goes silent ends the
// client's stream (with an error event the SDK raises); comments,
// keep-alives and resumes (starting_after) pass through unchanged; a stream
// may stay quiet for longer than the clients' timeout.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const { once } = require('node:events');
const h = require('../lib/harness');

const SSE_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8', 'x-request-id': 'req_stream' };

function sseEvent(type, seq, fields = {}) {
	return `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq, ...fields })}\n\n`;
}

function rssKiB(pid) {
	const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
	return Number(m[1]);
}

/* An http.request to the proxy that the test reads (or not) itself. */
function post(url, body) {
	const data = Buffer.from(JSON.stringify(body));
	return http.request(url, {
		method: 'POST',
		agent: false,
		headers: { 'content-type': 'application/json', 'content-length': data.length, authorization: h.DEFAULT_AUTH },
	}).end(data);
}

test('a slow reader pauses the upstream: the proxy\'s memory stays bounded and nothing is lost', async (t) => {
	const EVENTS = 8192;
	const delta = 'x'.repeat(16 * 1024);		/* 8192 x 16 KiB: 128 MiB */
	const st = { written: 0, stalled: false, done: false };
	// A small ASan quarantine, so that freed memory does not count as held.
	const env = { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS || ''}:quarantine_size_mb=1` };
	await h.withStack({ proxy: { env } }, async ({ up, px }) => {
		up.override = (req, res) => {
			(async () => {
				res.writeHead(200, SSE_HEADERS);
				for (let i = 0; i < EVENTS; i++) {
					const ev = i === EVENTS - 1 ?
						sseEvent('response.completed', i, { response: { id: 'resp_big', object: 'response', status: 'completed', store: false } }) :
						sseEvent('response.output_text.delta', i, { delta });
					st.written += ev.length;
					if (!res.write(ev)) {
						st.stalled = true;
						await once(res, 'drain');
						st.stalled = false;
					}
				}
				res.end();
				st.done = true;
			})().catch(() => {});
			return true;
		};
		const before = rssKiB(px.pid);
		const req = post(`${px.url}/v1/responses`, { model: 'gpt-4o', input: 'big', stream: true });
		const [res] = await once(req, 'response');
		assert.equal(res.statusCode, 200);
		res.pause();		/* the reader stalls */

		// Ready when the upstream's writes have been blocked for a while.
		let last = -1;
		let since = Date.now();
		await h.until(() => {
			if (st.written !== last) {
				last = st.written;
				since = Date.now();
			}
			return st.stalled && Date.now() - since > 500;
		}, { timeoutMs: 20000, what: 'the upstream to be held back' });
		const held = rssKiB(px.pid);
		const grownMiB = (held - before) / 1024;
		t.diagnostic(`upstream wrote ${(st.written / 1048576).toFixed(1)} of ${(EVENTS * 16.1 / 1024).toFixed(0)} MiB before it was held; proxy RSS grew ${grownMiB.toFixed(1)} MiB`);
		assert.equal(st.done, false, 'the upstream could not finish while the client read nothing');
		assert.ok(grownMiB < 32, `proxy RSS grew ${grownMiB.toFixed(1)} MiB while holding a stalled 128 MiB stream`);

		// The reader wakes up: every event arrives, in order.
		let buf = '';
		let n = 0;
		let lastEvent = null;
		res.setEncoding('utf8');
		res.on('data', (d) => {
			buf += d;
			let evs;
			[evs, buf] = h.parseSSEChunk(buf);
			for (const e of evs) {
				assert.equal(e.json.sequence_number, n, 'in order');
				n++;
				lastEvent = e.event;
			}
		});
		res.resume();
		await h.within(once(res, 'end'), 60000, 'the whole stream after the reader resumed');
		assert.equal(n, EVENTS, 'every event arrived');
		assert.equal(lastEvent, 'response.completed');
		assert.equal(st.done, true);
	});
});

test('a client that leaves mid-stream ends the upstream transfer at once; others go on', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const closed = [];
		up.override = (req, res) => {
			if (req.method !== 'POST') return false;
			res.writeHead(200, SSE_HEADERS);
			let i = 0;
			const timer = setInterval(() => res.write(sseEvent('response.output_text.delta', i++, { delta: 'tick' })), 20);
			res.on('close', () => {
				clearInterval(timer);
				closed.push(Date.now());
			});
			return true;
		};
		const a = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'a', stream: true }, agent: false,
		});
		const b = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'b', stream: true }, agent: false,
		});
		await a.firstEvent;
		await b.firstEvent;
		const t0 = Date.now();
		a.abort();
		await h.until(() => closed.length === 1, { timeoutMs: 3000, what: 'the upstream to see its connection close' });
		assert.ok(closed[0] - t0 < 2000, `upstream closed ${closed[0] - t0} ms after the client left`);
		// The other stream is unaffected: it keeps receiving events.
		const seen = b.events.length;
		await h.until(() => b.events.length > seen + 3, { what: 'the other stream to go on' });
		b.abort();
		await h.until(() => closed.length === 2, { timeoutMs: 3000, what: 'the second upstream close' });
		// And the proxy serves on.
		const id = up.seed();
		assert.equal((await h.request(`${px.url}/v1/responses/${id}`)).status, 200);
	});
});

test('a client that leaves while a plain answer is pending ends the upstream request', async () => {
	await h.withStack({ upstream: { hang: true } }, async ({ up, px }) => {
		const id = up.seed();
		const r = h.request(`${px.url}/v1/responses/${id}`, { timeout: 300, agent: false });
		await assert.rejects(r, /no complete answer/);
		await h.until(() => up.count('GET') === 1 && up.hung.size === 0,
			{ timeoutMs: 3000, what: 'the upstream to see the held request closed' });
	});
});

test('an upstream cut between events ends the stream with an error event the SDK raises', async () => {
	const OpenAI = require('openai');
	await h.withStack({}, async ({ up, px }) => {
		up.override = (req, res) => {
			res.writeHead(200, SSE_HEADERS);
			res.write(sseEvent('response.created', 0, { response: { id: 'resp_cut', object: 'response', status: 'in_progress' } }));
			res.write(sseEvent('response.output_text.delta', 1, { delta: 'Hel' }));
			setTimeout(() => res.socket.destroy(), 50);
			return true;
		};
		const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'x', stream: true } });
		const { events } = await h.within(s.done, 5000, 'the cut stream to end');
		assert.deepEqual(events.map((e) => e.event), ['response.created', 'response.output_text.delta', 'error']);
		const err = events[2].json;
		assert.equal(err.type, 'error');
		assert.equal(err.error.code, 'upstream_stream_cut');
		assert.match(err.error.message, /ended before its final event/);

		const client = new OpenAI({ baseURL: `${px.url}/v1`, apiKey: 'sk-test', maxRetries: 0 });
		const stream = await client.responses.create({ model: 'gpt-4o', input: 'x', stream: true });
		const got = [];
		await assert.rejects(async () => {
			for await (const ev of stream) got.push(ev.type);
		}, (e) => e instanceof OpenAI.APIError && /ended before its final event/.test(e.message));
		assert.deepEqual(got, ['response.created', 'response.output_text.delta']);
	});
});

test('an upstream cut in the middle of an event closes the client connection: no broken event', async () => {
	await h.withStack({}, async ({ up, px }) => {
		up.override = (req, res) => {
			res.writeHead(200, SSE_HEADERS);
			res.write(sseEvent('response.created', 0));
			res.write('event: response.output_text.delta\ndata: {"type":"response.outp');
			setTimeout(() => res.socket.destroy(), 50);
			return true;
		};
		const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'x', stream: true }, agent: false });
		await assert.rejects(h.within(s.done, 5000, 'the cut stream to end'), /aborted|terminated|ECONNRESET|socket hang up/);
		assert.deepEqual(s.events.map((e) => e.event), ['response.created'], 'the broken event never reached the client');
	});
});

test('an upstream that goes silent mid-stream is ended by stream_idle_timeout', async () => {
	await h.withStack({ proxy: { config: '[upstream]\nstream_idle_timeout = 1\n' } }, async ({ up, px }) => {
		let upstreamClosed = false;
		up.override = (req, res) => {
			res.writeHead(200, SSE_HEADERS);
			res.write(sseEvent('response.created', 0));
			res.on('close', () => { upstreamClosed = true; });
			return true;	/* and then nothing, connection open */
		};
		const t0 = Date.now();
		const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'x', stream: true } });
		const { events } = await h.within(s.done, 8000, 'the silent stream to end');
		const ms = Date.now() - t0;
		assert.deepEqual(events.map((e) => e.event), ['response.created', 'error']);
		assert.equal(events[1].json.error.code, 'upstream_timeout');
		assert.ok(ms >= 900 && ms < 6000, `ended after ${ms} ms with a 1 s idle timeout`);
		await h.until(() => upstreamClosed, { what: 'the upstream connection to be closed' });
	});
});

test('comments, keep-alives, id: and retry: lines pass through byte for byte', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const parts = [
			': connected\n\n',
			'retry: 3000\n',
			'id: 1\r\nevent: response.created\r\ndata: {"type":"response.created","sequence_number":0}\r\n\r\n',
			': keep-alive\n\n',
			'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",\ndata: "sequence_number":1,"delta":"hi"}\n\n',
			':\n\n',
			sseEvent('response.completed', 2, { response: { id: 'resp_ka', object: 'response', status: 'completed', store: false } }),
		];
		up.override = (req, res) => {
			res.writeHead(200, SSE_HEADERS);
			(async () => {
				for (const p of parts) {
					res.write(p);
					await h.delay(5);
				}
				res.end();
			})();
			return true;
		};
		const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'x', stream: true } });
		const { text, events } = await s.done;
		assert.equal(text, parts.join(''), 'the client got exactly the upstream\'s bytes');
		assert.equal(events.length, 3);
		assert.equal(events[1].json.delta, 'hi', 'a multi-line data: event arrives whole');
	});
});

test('GET ?stream=true&starting_after=N (background resume) passes through unchanged and is never cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed({ background: true });
		up.finish(id);
		const url = `${px.url}/v1/responses/${id}?stream=true&starting_after=3`;
		for (let i = 1; i <= 2; i++) {
			const s = await h.openSSE(url);
			assert.equal(s.status, 200);
			h.assertXCache(s, 'BYPASS', `resume #${i}`);
			const { events } = await s.done;
			assert.equal(events[0].json.sequence_number, 4, 'events after starting_after only');
			assert.equal(events[events.length - 1].event, 'response.completed');
			assert.equal(up.count('GET', `/v1/responses/${id}`), i, 'each resume reaches the upstream');
		}
		const last = up.requests[up.requests.length - 1];
		assert.equal(last.url, `/v1/responses/${id}?stream=true&starting_after=3`, 'the query is forwarded as sent');
	});
});

test('a stream may stay quiet for longer than client_timeout', async () => {
	await h.withStack({ proxy: { config: '[server]\nclient_timeout = 1\n' } }, async ({ up, px }) => {
		const id = up.seed();
		up.override = (req, res) => {
			if (req.method !== 'POST') return false;
			res.writeHead(200, SSE_HEADERS);
			res.write(sseEvent('response.created', 0));
			setTimeout(() => {
				res.end(sseEvent('response.completed', 1, { response: { id, object: 'response', status: 'completed', store: false } }));
			}, 2500);
			return true;
		};
		const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'x', stream: true } });
		const { events } = await h.within(s.done, 8000, 'the quiet stream');
		assert.deepEqual(events.map((e) => e.event), ['response.created', 'response.completed']);
		// The connection's own timeouts are back for what comes next on it.
		const r = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(r.status, 200);
	});
});

test('a streamed create\'s final event, split across writes with CRLF and multi-line data, fills the cache', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = 'resp_split0123456789';
		const response = up.responseObject({ ...up.get(up.seed()), id, status: 'completed' });
		const json = JSON.stringify({ type: 'response.completed', sequence_number: 1, response });
		const cut = json.indexOf('"response":');
		const final = `event: response.completed\r\ndata: ${json.slice(0, cut)}\r\ndata: ${json.slice(cut)}\r\n\r\n`;
		up.override = (req, res) => {
			if (req.method !== 'POST') return false;
			res.writeHead(200, SSE_HEADERS);
			(async () => {
				res.write(sseEvent('response.created', 0));
				for (const piece of [final.slice(0, 7), final.slice(7, 200), final.slice(200, -3), final.slice(-3)]) {
					res.write(piece);
					await h.delay(10);
				}
				res.end();
			})();
			return true;
		};
		const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'x', stream: true } });
		const { events } = await s.done;
		assert.equal(events[1].event, 'response.completed');
		const g = await h.request(`${px.url}/v1/responses/${id}`);
		h.assertXCache(g, 'HIT', 'GET after the streamed create');
		assert.deepEqual(g.json(), response);
		assert.equal(g.headers['content-type'], 'application/json');
		assert.equal(up.count('GET'), 0, 'no GET reached the upstream');
	});
});
