'use strict';
// Response ids in the path: encoded slashes, dots, backslashes, NULs,
// CR/LF, and ids over 128 characters get a 400 in the OpenAI error shape on
// every id route (GET, input_items, cancel, DELETE) and are never
// forwarded; an id of exactly 128 characters is forwarded (GET,
// input_items, cancel).
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');
const { head, upSaw } = require('../lib/hostile');

test('encoded slashes, dots, NULs and over-long ids in /v1/responses/{id}[/input_items|/cancel]: 400, not forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const bad = ['resp%2Fx', 'resp%2fx', '%2F', '..', 'resp_..', '%2e%2e', '%2E%2E', 'resp_%2e%2e%2fx',
			'resp%00x', '%00', 'resp_%0d%0a', 'resp_%5c', 'r'.repeat(129), 'resp_' + 'a'.repeat(124)];
		for (const id of bad) {
			const short = id.length > 24 ? `${id.slice(0, 12)}...(${id.length})` : id;
			const auth = ['Authorization: Bearer sk-test', 'Connection: close'];
			const g = await h.rawRequest(px.port, head(px.port, 'GET', `/v1/responses/${id}`, auth));
			h.assertOpenAIError(g, 400, `GET /v1/responses/${short}`);
			const i = await h.rawRequest(px.port, head(px.port, 'GET', `/v1/responses/${id}/input_items`, auth));
			h.assertOpenAIError(i, 400, `GET /v1/responses/${short}/input_items`);
			const c = await h.rawRequest(px.port, head(px.port, 'POST', `/v1/responses/${id}/cancel`, [...auth, 'Content-Length: 0']));
			h.assertOpenAIError(c, 400, `POST /v1/responses/${short}/cancel`);
			const d = await h.rawRequest(px.port, head(px.port, 'DELETE', `/v1/responses/${id}`, auth));
			h.assertOpenAIError(d, 400, `DELETE /v1/responses/${short}`);
		}
		assert.equal(up.requests.length, 0, `upstream saw: ${upSaw(up)}`);
	});
});

test('a 128-character id is accepted on all three routes', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = 'resp_' + 'A-z_9'.repeat(25).slice(0, 123);
		assert.equal(id.length, 128);
		const g = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(g.status, 404, `GET: ${g.body}`);
		const i = await h.request(`${px.url}/v1/responses/${id}/input_items`);
		assert.equal(i.status, 404, `input_items: ${i.body}`);
		const c = await h.request(`${px.url}/v1/responses/${id}/cancel`, { method: 'POST', body: '' });
		assert.equal(c.status, 404, `cancel: ${c.body}`);
		assert.equal(up.count('GET', `/v1/responses/${id}`), 1);
		assert.equal(up.count('GET', `/v1/responses/${id}/input_items`), 1);
		assert.equal(up.count('POST', `/v1/responses/${id}/cancel`), 1);
	});
});
