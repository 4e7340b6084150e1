#include <cstdio>
int main() { std::puts("owlore"); return 0; }
