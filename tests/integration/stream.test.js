'use strict';
// Streams pass through event by event, unbuffered; GET ?stream=true is
// forwarded and never cached; a streamed create's final response is cached.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

function checkEvents(events, what) {
	assert.ok(events.length >= 4, `${what}: ${events.length} events`);
	events.forEach((e, i) => {
		assert.ok(e.json, `${what}: event ${i} data is JSON`);
		assert.equal(e.event, e.json.type, `${what}: event ${i} name matches its type`);
		assert.equal(e.json.sequence_number, i, `${what}: event ${i} in order`);
	});
	assert.equal(events[0].event, 'response.created');
	assert.equal(events[events.length - 1].event, 'response.completed', `${what}: last event`);
	assert.ok(events.some((e) => e.event === 'response.output_text.delta'), `${what}: has deltas`);
}

test('a streamed create reaches the client event by event, before the upstream has finished', async () => {
	await h.withStack({}, async ({ up, px }) => {
		let release;
		up.holdStream = new Promise((r) => { release = r; });
		const s = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'stream it', stream: true },
		});
		try {
			assert.equal(s.status, 200);
			assert.match(s.headers['content-type'] || '', /^text\/event-stream/);
			h.assertXCache(s, 'BYPASS', 'streamed create');
			const first = await h.within(s.firstEvent, 5000,
				'the first SSE event while the upstream holds the rest (is the proxy buffering the stream?)');
			assert.equal(first.event, 'response.created');
			assert.equal(s.events.length, 1, 'only the first event so far: the upstream is still held');
		} finally {
			release();
		}
		const { events } = await s.done;
		checkEvents(events, 'streamed create');
		const final = events[events.length - 1].json.response;
		assert.equal(final.status, 'completed');
		assert.deepEqual(events.map((e) => e.json), up.get(final.id).events, 'all events passed through unchanged');
	});
});

test('a streamed create with delays between events arrives whole and in order', async () => {
	await h.withStack({ upstream: { streamDelayMs: 30 } }, async ({ up, px }) => {
		const s = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'slowly', stream: true },
		});
		assert.equal(s.status, 200);
		const { events } = await s.done;
		checkEvents(events, 'delayed stream');
		const text = events.filter((e) => e.event === 'response.output_text.delta').map((e) => e.json.delta).join('');
		assert.equal(text, events[events.length - 1].json.response.output[0].content[0].text);
		assert.equal(up.count('POST', '/v1/responses'), 1);
	});
});

test('the final response of a streamed create is cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const s = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'cache the end', stream: true },
		});
		const { events } = await s.done;
		checkEvents(events, 'stream');
		const final = events[events.length - 1].json.response;
		const g = await h.request(`${px.url}/v1/responses/${final.id}`);
		assert.equal(g.status, 200);
		h.assertXCache(g, 'HIT', 'GET after a completed stream');
		assert.deepEqual(g.json(), final);
		assert.equal(up.count('GET', `/v1/responses/${final.id}`), 0);
	});
});

test('GET ?stream=true is passed through (BYPASS) and never cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed({ input: 'replay me' });
		const p = `/v1/responses/${id}`;
		// Cache the plain response first: a stream GET must not be served from it.
		h.assertXCache(await h.request(px.url + p), 'MISS', 'plain GET');
		h.assertXCache(await h.request(px.url + p), 'HIT', 'plain GET again');

		for (let i = 1; i <= 2; i++) {
			const s = await h.openSSE(`${px.url}${p}?stream=true`);
			assert.equal(s.status, 200);
			assert.match(s.headers['content-type'] || '', /^text\/event-stream/);
			h.assertXCache(s, 'BYPASS', `GET ?stream=true #${i}`);
			const { events } = await s.done;
			checkEvents(events, `replay #${i}`);
			const streamGets = up.requests.filter((r) => r.method === 'GET' && r.path === p && /stream=true/.test(r.url));
			assert.equal(streamGets.length, i, `upstream stream GETs after #${i}`);
		}

		const s = await h.openSSE(`${px.url}${p}?stream=true&starting_after=5`);
		const { events } = await s.done;
		assert.equal(events[0].json.sequence_number, 6, 'starting_after is forwarded');
		assert.ok(/starting_after=5/.test(up.requests[up.requests.length - 1].url));
	});
});

test('a client that goes away mid-stream does not hurt the daemon', async () => {
	await h.withStack({}, async ({ up, px }) => {
		let release;
		up.holdStream = new Promise((r) => { release = r; });
		const s = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'abandon me', stream: true },
		});
		await h.within(s.firstEvent, 5000, 'first event');
		s.abort();
		release();
		// The upstream finishes writing; the daemon keeps serving.
		up.holdStream = null;
		const id = up.seed();
		const g = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(g.status, 200);
		const s2 = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'next', stream: true },
		});
		const { events } = await s2.done;
		checkEvents(events, 'stream after an abandoned one');
	});
});

test('an HTTP/1.0 client that has every byte of a stream before it ends', async () => {
	await h.withStack({}, async ({ up, px }) => {
		// Not chunked: when the upstream ends the stream after the client
		// took all of it, evhttp ends the request at once.
		up.override = (req, res) => {
			if (req.method !== 'POST') return false;
			res.writeHead(200, { 'content-type': 'text/event-stream' });
			res.write('event: response.created\ndata: {"type":"response.created",' +
				'"sequence_number":0,"response":{"id":"resp_h10","status":"in_progress"}}\n\n');
			setTimeout(() => res.end(), 200);
			return true;
		};
		const body = JSON.stringify({ model: 'gpt-4o', input: 'old client', stream: true });
		for (let i = 0; i < 3; i++) {
			const r = await h.rawRequest(px.port, 'POST /v1/responses HTTP/1.0\r\n' +
				'Host: x\r\nAuthorization: Bearer sk-test\r\nContent-Type: application/json\r\n' +
				`Content-Length: ${body.length}\r\n\r\n${body}`);
			assert.equal(r.status, 200);
			assert.match(r.body, /response\.created/);
		}
		up.override = null;
		const id = up.seed();
		const g = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(g.status, 200, 'the daemon still serves');
	});
});
