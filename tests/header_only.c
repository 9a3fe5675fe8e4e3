/* Compiles the public header alone: it must need nothing else. */
#include <namestore.h>

int main(void)
{
	const char *v = ns_version();
	return v == 0 ? NS_EINVAL : 0;
}
