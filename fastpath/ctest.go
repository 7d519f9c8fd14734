package fastpath

// Bridges to fastpath.c for the package's tests (cgo cannot be used in a
// _test.go file). Nothing else calls them; the linker drops them from the
// binary.

// #include <stdlib.h>
// const char *lns_test_request(const char *ticket, size_t n, char **env, char **args, int nargs, int k,
//	char **head, size_t *headn, char **body, size_t *bodyn, char **sock, long long *timeout_ns);
// void lns_test_limits(long long *max_exec, long long *max_inline, long long *max_ticket,
//	long long *min_timeout, long long *max_timeout, long long *max_shown, long long *max_policy);
import "C"

import (
	"time"
	"unsafe"
)

// cRequest is what fastpath.c would send for a ticket and a call (its
// environ, and the words after argv[0] with the command at args[k]), or
// why it would not send.
type cRequest struct {
	head, body []byte
	sock       string
	timeout    time.Duration
	why        string // "" when it would send
}

// cBuildRequest runs lns_test_request. Strings holding NUL are cut there,
// as C strings are.
func cBuildRequest(ticket []byte, environ, args []string, k int) cRequest {
	cstrs := func(list []string) (**C.char, func()) {
		arr := C.malloc(C.size_t(len(list)+1) * C.size_t(unsafe.Sizeof((*C.char)(nil))))
		ptrs := unsafe.Slice((**C.char)(arr), len(list)+1)
		for i, s := range list {
			ptrs[i] = C.CString(s)
		}
		ptrs[len(list)] = nil
		return (**C.char)(arr), func() {
			for _, p := range ptrs[:len(list)] {
				C.free(unsafe.Pointer(p))
			}
			C.free(arr)
		}
	}
	env, freeEnv := cstrs(environ)
	defer freeEnv()
	argv, freeArgs := cstrs(args)
	defer freeArgs()
	var t *C.char
	if len(ticket) > 0 {
		t = (*C.char)(C.CBytes(ticket))
		defer C.free(unsafe.Pointer(t))
	}
	var head, body, sock *C.char
	var headn, bodyn C.size_t
	var timeout C.longlong
	why := C.lns_test_request(t, C.size_t(len(ticket)), env, argv, C.int(len(args)), C.int(k),
		&head, &headn, &body, &bodyn, &sock, &timeout)
	if why != nil {
		return cRequest{why: C.GoString(why)}
	}
	defer C.free(unsafe.Pointer(head))
	defer C.free(unsafe.Pointer(body))
	defer C.free(unsafe.Pointer(sock))
	return cRequest{head: C.GoBytes(unsafe.Pointer(head), C.int(headn)), body: C.GoBytes(unsafe.Pointer(body), C.int(bodyn)),
		sock: C.GoString(sock), timeout: time.Duration(timeout)}
}

// cLimits are the limits fastpath.c keeps.
type cLimits struct {
	maxExec, maxInline, maxTicket, maxShown, maxPolicy int
	minTimeout, maxTimeout                             time.Duration
}

func cLimitsOf() cLimits {
	var e, i, t, mn, mx, sh, pol C.longlong
	C.lns_test_limits(&e, &i, &t, &mn, &mx, &sh, &pol)
	return cLimits{maxExec: int(e), maxInline: int(i), maxTicket: int(t), maxShown: int(sh), maxPolicy: int(pol),
		minTimeout: time.Duration(mn), maxTimeout: time.Duration(mx)}
}
