/*
 * reply.h - answers the proxy makes itself, in the OpenAI error shape.
 */
#ifndef RC_REPLY_H
#define RC_REPLY_H

struct evhttp_request;

/*
 * Send status with {"error":{"message","type","param":null,"code"}}.
 * type NULL means "invalid_request_error".  allow, if not NULL, becomes
 * the Allow header.  4xx answers say x-should-retry: false.
 */
void	reply_error(struct evhttp_request *, int status, const char *type,
	    const char *code, const char *message, const char *allow);

#endif
