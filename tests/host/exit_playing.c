/* A C application that exits with its pipeline PLAYING: it plays the launch line given as
 * its argument until kvssink's first PERSISTED ack (or 60 s), then calls exit(0) without
 * stopping the pipeline or dropping it. */
#include <gst/gst.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  if (argc != 2) {
    fprintf(stderr, "usage: exit_playing LAUNCH-LINE\n");
    return 2;
  }
  GError *error = NULL;
  GstElement *pipeline = gst_parse_launch(argv[1], &error);
  if (pipeline == NULL) {
    fprintf(stderr, "%s\n", error->message);
    return 2;
  }
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstBus *bus = gst_element_get_bus(pipeline);
  gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
  gboolean persisted = FALSE;
  while (!persisted && g_get_monotonic_time() < deadline) {
    GstMessage *msg = gst_bus_timed_pop(bus, 100 * GST_MSECOND);
    if (msg == NULL)
      continue;
    const GstStructure *s = gst_message_get_structure(msg);
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ELEMENT && s != NULL &&
        gst_structure_has_name(s, "kvs-ack")) {
      const gchar *type = gst_structure_get_string(s, "event-type");
      persisted = type != NULL && g_str_equal(type, "PERSISTED");
    }
    gst_message_unref(msg);
  }
  printf("exiting\n");
  fflush(stdout);
  exit(0);
}
