/*
 * main.c - nsctl's entry point.  The program is nsctl_main() (nsctl.c), so
 * that the fuzz target can run it in-process.
 */
#include "nsctl.h"

int main(int argc, char **argv)
{
	return nsctl_main(argc, argv);
}
