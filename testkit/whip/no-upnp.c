/* A libgupnp-igd that maps no ports. Debian's whip-client links libsoup2;
 * GStreamer's ICE (libnice) links libgupnp-igd, which pulls in libsoup3,
 * and libsoup aborts a process holding both. Found first on
 * LD_LIBRARY_PATH, this keeps libsoup3 out of whip-client; UPnP port
 * mapping is nothing a test on one machine needs. libnice checks for a
 * NULL agent before using one. */
typedef unsigned long GType;
GType gupnp_simple_igd_get_type(void) { return 80; /* G_TYPE_OBJECT */ }
void *gupnp_simple_igd_thread_new(void) { return 0; }
void gupnp_simple_igd_add_port(void *s, const char *p, unsigned short e, const char *l, unsigned short lp, unsigned int d, const char *desc) { (void)s; (void)p; (void)e; (void)l; (void)lp; (void)d; (void)desc; }
void gupnp_simple_igd_remove_port_local(void *s, const char *p, const char *l, unsigned short lp) { (void)s; (void)p; (void)l; (void)lp; }
