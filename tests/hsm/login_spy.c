/*
 * Test-only PKCS#11 interposer: forwards every call to the module named by
 * $YIBAO_SPY_TARGET and appends one line to $YIBAO_SPY_LOG per C_Login, so a
 * test can count the logins the token really received.  The PIN is not logged.
 * CK_FUNCTION_LIST (v2.40): CK_VERSION then 68 function pointers; C_Login is
 * member 18 (0-based) in the order of pkcs11f.h.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long CK_ULONG;
typedef struct { unsigned char major, minor; void *fn[68]; } FUNCTION_LIST;
typedef CK_ULONG (*GetFunctionList)(FUNCTION_LIST **);
typedef CK_ULONG (*Login)(CK_ULONG, CK_ULONG, unsigned char *, CK_ULONG);

static FUNCTION_LIST spy;
static Login real_login;

static CK_ULONG spy_login(CK_ULONG session, CK_ULONG user, unsigned char *pin, CK_ULONG len)
{
	CK_ULONG rv = real_login(session, user, pin, len);
	const char *path = getenv("YIBAO_SPY_LOG");
	if (path) {
		FILE *f = fopen(path, "a");
		if (f) { fprintf(f, "C_Login user_type=%lu rv=0x%lx\n", user, rv); fclose(f); }
	}
	return rv;
}

CK_ULONG C_GetFunctionList(FUNCTION_LIST **out)
{
	static FUNCTION_LIST *real;
	if (!real) {
		const char *target = getenv("YIBAO_SPY_TARGET");
		void *h = target ? dlopen(target, RTLD_NOW | RTLD_LOCAL) : NULL;
		GetFunctionList gfl = h ? (GetFunctionList)dlsym(h, "C_GetFunctionList") : NULL;
		if (!gfl || gfl(&real) != 0) return 0x5; /* CKR_GENERAL_ERROR */
		memcpy(&spy, real, sizeof(spy));
		real_login = (Login)real->fn[18];
		spy.fn[18] = (void *)spy_login;
		spy.fn[3] = (void *)C_GetFunctionList;
	}
	*out = &spy;
	return 0;
}
