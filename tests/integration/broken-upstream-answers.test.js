'use strict';
// A broken upstream answer to a GET: a 200 whose JSON is malformed is passed
// through unchanged or turned into a 502, and one cut short of its
// Content-Length is a 502; neither is ever served from the cache, so the
// next GET asks the upstream again.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('malformed JSON from the upstream on GET /v1/responses/{id}: passed through unchanged or 502, never cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const bodies = {
			resp_trunc: '{"id":"resp_trunc","object":"response","status":"completed","output":[{"type":"mess',
			resp_garbage: 'not json at all <html>',
			resp_trailing: '{"id":"resp_trailing","object":"response","status":"completed"}}garbage',
			resp_nul: '{"id":"resp_nul","object":"response","status":"completed"}\u0000',
			resp_array: '[{"id":"resp_array","status":"completed"}]',
		};
		up.override = (req, res) => {
			const m = /^\/v1\/responses\/(resp_[a-z]+)(\/input_items)?$/.exec(req.url.split('?')[0]);
			if (!m || !(m[1] in bodies)) return false;
			const b = Buffer.from(bodies[m[1]]);
			res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(b.length), 'x-request-id': 'req_bad' });
			res.end(b);
			return true;
		};
		for (const [id, text] of Object.entries(bodies)) {
			for (const suffix of ['', '/input_items']) {
				const p = `/v1/responses/${id}${suffix}`;
				for (let n = 1; n <= 2; n++) {
					const r = await h.request(px.url + p);
					if (r.status === 200) {
						assert.equal(r.body, text, `${p} #${n}: the body was altered`);
					} else {
						h.assertOpenAIError(r, 502, `${p} #${n}`);
					}
					assert.notEqual(r.headers['x-cache'], 'HIT', `${p} #${n} was served from the cache`);
				}
				assert.equal(up.count('GET', p), 2, `${p}: the second GET did not reach the upstream`);
			}
		}
	});
});

test('an upstream answer cut short (Content-Length not reached): 502, never cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		let cut = true;
		up.override = (req, res) => {
			if (!cut || req.url.split('?')[0] !== `/v1/responses/${id}`) return false;
			const part = `{"id":"${id}","object":"response","status":"completed","output":[`;
			res.writeHead(200, { 'content-type': 'application/json', 'content-length': '5000' });
			res.write(part);
			setImmediate(() => res.socket.destroy());
			return true;
		};
		const r = await h.request(`${px.url}/v1/responses/${id}`);
		h.assertOpenAIError(r, 502, 'truncated upstream body');
		cut = false;
		const g = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(g.status, 200);
		h.assertXCache(g, 'MISS', 'the GET after a truncated answer');
		assert.equal(up.count('GET', `/v1/responses/${id}`), 2);
	});
});
