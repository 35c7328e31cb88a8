// ztinfer command line (placeholder while the foundation lands).
int main() { return 0; }
