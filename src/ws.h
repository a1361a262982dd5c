/*
 * ws.h - WebSocket mode on GET /v1/responses: the client's WebSocket
 * relayed to the upstream's, with the proxy's key (ws.c).
 */
#ifndef RC_WS_H
#define RC_WS_H

struct evhttp_request;
struct proxy_req;
struct ws_list;

/* 1 if req asks to open a WebSocket (RFC 6455 4.1: GET, Upgrade). */
int	ws_upgrade_asked(struct evhttp_request *);

/*
 * Open the upstream's WebSocket for pr (admitted: its client, key and
 * credential known), then answer the client's handshake and relay frames
 * both ways.  Ends pr: 101 once both are open, or the upstream's refusal
 * (its status, an OpenAI-shaped body), or 400 for a bad handshake.
 */
void	ws_begin(struct proxy_req *);

/* pr ends before the upstream answered (its client left): the relay goes. */
struct ws_relay;
void	ws_abandon(struct ws_relay *);

/* Every relay of a worker, for its shutdown: close them (1001) and free. */
struct ws_list	*ws_list_new(void);
void		 ws_list_close(struct ws_list *);
int		 ws_list_empty(const struct ws_list *);
void		 ws_list_free(struct ws_list *);

#endif
